"""The Lightning callback (optional extra ``specbound[lightning]``, installed in the dev
requirements): a 2-epoch run logs the same values as a plain Tracker on the model of each
update step; without Lightning, using the class is an InputError naming the extra."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch

import specbound
from specbound.integrations.records import TRACK_FILE

from integrations.tiny import Synthetic, tiny_bert

BOUNDS = ["spectrum_adaptive", "edelman"]


def test_without_lightning_the_class_names_the_extra(monkeypatch):
    import specbound.integrations.lightning as mod

    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    fresh = importlib.reload(mod)  # the module itself imports without Lightning
    try:
        with pytest.raises(specbound.InputError, match=r"specbound\[lightning\]"):
            fresh.SpecboundLightningCallback  # noqa: B018
    finally:
        monkeypatch.undo()
        importlib.reload(mod)


def test_two_epoch_run_logs_the_tracker_values(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import Logger

    from specbound.integrations.lightning import SpecboundLightningCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = tiny_bert()

        def training_step(self, batch, batch_idx):
            loss = self.net(**batch).loss
            self.log("train_loss", loss, on_step=True, on_epoch=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    class Capture(Logger):  # what any logger the user configured receives
        def __init__(self):
            super().__init__()
            self.calls: dict[int, dict[str, float]] = {}

        name, version = "capture", 0

        def log_metrics(self, metrics, step=None):
            self.calls.setdefault(int(step), {}).update(metrics)

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    class Snapshot(pl.Callback):  # the weights at each update step, to re-analyse afterwards
        def __init__(self):
            self.states: dict[int, dict[str, torch.Tensor]] = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step % 3 == 0:
                self.states[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}

    loader = torch.utils.data.DataLoader(Synthetic(40), batch_size=8)  # 5 steps per epoch
    cb = SpecboundLightningCallback(every_n_steps=3, out=tmp_path / "t", bounds=BOUNDS, plots=False)
    snap, logger = Snapshot(), Capture()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=logger, callbacks=[cb, snap],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1, default_root_dir=str(tmp_path))
    trainer.fit(Module(), loader)

    steps = [3, 6, 9]
    assert cb.tracker.steps == steps and sorted(snap.states) == steps
    # at the logger step of that batch's own train_loss (Lightning's: optimizer steps before it)
    logged = {s + 1: m for s, m in logger.calls.items() if "specbound/log10_spectrum_adaptive" in m}
    assert sorted(logged) == steps
    assert all("train_loss" in logged[s] for s in steps)
    plain = specbound.Tracker(bounds=BOUNDS)
    model = tiny_bert()
    for step in steps:
        model.load_state_dict(snap.states[step])
        expected = plain.update(model, step=step)
        got = {k: v for k, v in logged[step].items() if k.startswith("specbound/")}
        assert set(got) == set(expected)
        for k, v in expected.items():
            assert math.isclose(got[k], v, rel_tol=1e-12, abs_tol=1e-12), (step, k)
    row = cb.tracker.frame().set_index("step")
    for step in steps:  # the table holds the full-precision values, and the loss of the run
        assert math.isclose(row.loc[step, "log10_edelman"], plain.frame().set_index("step").loc[step, "log10_edelman"],
                            rel_tol=1e-12)
        assert math.isfinite(row.loc[step, "train_loss"])
    assert row["epoch"].tolist() == pytest.approx([0.6, 1.2, 1.8])
    assert (tmp_path / "t" / TRACK_FILE).is_file()
