"""The Hugging Face callback in a real ``transformers.Trainer`` run (tiny BERT, CPU, a few dozen
steps): rows at exactly the expected steps, values equal to ``specbound.analyze`` of the
checkpoint saved at that step, the scalars in the log history, reuse with a frozen layer (counted),
and a run killed and resumed from its checkpoint giving one row per step."""

from __future__ import annotations

import math

import pandas as pd
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import specbound
from specbound.integrations.hf import SpecboundCallback
from specbound.integrations.records import LAYERS_FILE, TRACK_FILE

from integrations.tiny import Synthetic, tiny_bert, training_args

BOUNDS = ["spectrum_adaptive", "edelman"]


def read(path):
    return pd.read_csv(path)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def test_trainer_run_records_the_analysis_of_each_saved_step(tmp_path):
    """Also the reuse: encoder layer 0 is frozen, so its spectra are computed once."""
    from transformers import Trainer

    out = tmp_path / "track"
    cb = SpecboundCallback(every_n_steps=4, out=out, bounds=BOUNDS)
    args = training_args(tmp_path / "ckpt", max_steps=16, save_strategy="steps", save_steps=4,
                         eval_strategy="steps", eval_steps=8, logging_steps=5)
    model = tiny_bert()
    for p in model.bert.encoder.layer[0].parameters():
        p.requires_grad_(False)
    trainer = Trainer(model=model, args=args, train_dataset=Synthetic(64), eval_dataset=Synthetic(16, seed=1),
                      callbacks=[cb])
    trainer.train()

    track, layers = read(out / TRACK_FILE), read(out / LAYERS_FILE)
    steps = [4, 8, 12, 16]
    assert track["step"].tolist() == steps
    assert sorted(layers["step"].unique().tolist()) == steps and len(layers) == len(steps) * 2 * 4
    # the trainer's loss of that very step (the callback asks for a log there) and the eval loss
    assert track["loss"].notna().all()
    assert track.set_index("step")["eval_loss"].loc[[8, 16]].notna().all()
    assert track["epoch"].notna().all()

    for step in steps:
        rep = specbound.analyze(tmp_path / "ckpt" / f"checkpoint-{step}", bounds=BOUNDS)
        row = track[track["step"] == step].iloc[0]
        for name, b in rep.bounds.items():
            assert close(row[f"log10_{name}"], b.log10_value), (step, name)
        m = rep.matrices
        assert close(row["frac_p_star_zero"], float((m["p_star"] == 0).mean()))
        for kind in ("QK", "OV", "M_in", "M_out"):
            sel = m[m["kind"] == kind]
            assert close(row[f"mean_stable_rank_{kind}"], sel["stable_rank"].mean())
            assert close(row[f"mean_effective_rank_{kind}"], sel["effective_rank"].mean())
            for layer, g in sel.groupby("layer"):
                got = layers[(layers["step"] == step) & (layers["layer"] == layer) & (layers["kind"] == kind)]
                assert len(got) == 1 and close(got["sigma1"].iloc[0], g["spectral_norm"].max())

    # the log history holds the scalars, at the update steps, equal to the table
    logged = {e["step"]: e for e in trainer.state.log_history if "specbound/log10_spectrum_adaptive" in e}
    assert sorted(logged) == steps
    for step in steps:
        row = track[track["step"] == step].iloc[0]
        assert close(logged[step]["specbound/log10_edelman"], row["log10_edelman"])
        assert close(logged[step]["specbound/frac_p_star_zero"], row["frac_p_star_zero"])
        assert "specbound/sigma1_QK_layer1" in logged[step] and "loss" in logged[step]
    # reuse: the frozen layer's five blocks were computed once, the trained layer's at every update
    store = cb.tracker.store
    for block in ("qk", "ov", "m_in", "m_out", "vo"):
        assert store.computed[(0, block)] == 1, block
        assert store.computed[(1, block)] == len(steps), block
    assert store.total.hits == 5 * (len(steps) - 1)
    assert track["blocks_computed"].tolist() == [10, 5, 5, 5] and track["blocks_reused"].tolist() == [0, 5, 5, 5]
    assert (layers[layers["layer"] == 0].groupby("kind")["sigma1"].nunique() == 1).all()
    assert len(store) == 10  # only the latest update's spectra are held
    # plots at the end of training; no temporary files left
    for f in ("track_bounds.png", "track_sigma1.png", "track_p_star_zero.png"):
        assert (out / f).stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


class Crash(Exception):
    pass


def test_a_killed_run_resumed_from_its_checkpoint_has_one_row_per_step(tmp_path):
    from transformers import Trainer, TrainerCallback

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise Crash

    out, ckpt = tmp_path / "t", tmp_path / "c"
    args = training_args(ckpt, max_steps=8, save_strategy="steps", save_steps=4)
    first = Trainer(model=tiny_bert(), args=args, train_dataset=Synthetic(64),
                    callbacks=[SpecboundCallback(every_n_steps=2, out=out, bounds=["edelman"]), KillAt()])
    with pytest.raises(Crash):
        first.train()
    assert read(out / TRACK_FILE)["step"].tolist() == [2, 4, 6]  # written after every update

    class Reporter(TrainerCallback):  # stands for TensorBoard / W&B: what on_log hands them
        def __init__(self):
            self.seen: dict[int, dict] = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.seen.setdefault(state.global_step, {}).update(logs)

    cb, reporter = SpecboundCallback(every_n_steps=2, out=out, bounds=["edelman"], plots=False), Reporter()
    second = Trainer(model=tiny_bert(seed=1), args=args, train_dataset=Synthetic(64), callbacks=[reporter])
    cb.attach(second)  # ahead of the reporters, so they get the scalars in the same log call
    second.train(resume_from_checkpoint=str(ckpt / "checkpoint-4"))
    assert [s for s, logs in sorted(reporter.seen.items()) if "specbound/log10_edelman" in logs] == [6, 8]
    track, layers = read(out / TRACK_FILE), read(out / LAYERS_FILE)
    assert track["step"].tolist() == [2, 4, 6, 8]
    assert layers.groupby("step").size().tolist() == [8] * 4
    # the row of step 6 is the resumed run's (the killed run's step 6 was dropped at train begin)
    assert close(track.set_index("step").loc[6, "log10_edelman"], cb.tracker.frame().set_index("step").loc[6, "log10_edelman"])
    rep = specbound.analyze(second.model, bounds=["edelman"])
    assert close(track.set_index("step").loc[8, "log10_edelman"], rep.bounds["edelman"].log10_value)


@pytest.mark.parametrize("kwargs, match", [
    ({"every_n_steps": 0}, "every_n_steps"),
    ({"every_n_steps": -5}, "every_n_steps"),
    ({"every_n_steps": 2.5}, "every_n_steps"),
    ({"every_n_steps": True}, "every_n_steps"),
    ({"bounds": ["spectrum_adaptive", "no_such_family"]}, "no_such_family"),
    ({"bounds": "edelman_seq_len"}, "seq_len"),
    ({"dtype": "float16"}, "float16"),
    ({"ff_method": "qr"}, "ff_method"),
])
def test_bad_input_is_refused_at_construction(tmp_path, kwargs, match):
    with pytest.raises(specbound.InputError, match=match):
        SpecboundCallback(**{"every_n_steps": 10, "out": tmp_path / "t", **kwargs})
    assert not (tmp_path / "t" / TRACK_FILE).exists()


def test_an_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(specbound.InputError, match="not a folder"):
        SpecboundCallback(every_n_steps=10, out=f)
