"""The plain Tracker in a hand-written loop: values equal ``analyze``, tables written atomically
and read back exactly, one row per step (replace, rewind, continue), reuse counted, options and
bad input."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import specbound
from specbound.integrations.records import LAYERS_FILE, TRACK_FILE

from integrations.tiny import tiny_bert

BOUNDS = ["spectrum_adaptive", "edelman"]


@pytest.fixture(scope="module")
def model():
    return tiny_bert()


def nudge(model, layers=(0, 1), seed=0):
    """An optimizer-like change of the encoder layers ``layers`` (the others stay bit-identical)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in layers:
            for p in model.bert.encoder.layer[i].parameters():
                p.add_(1e-2 * torch.randn(p.shape, generator=g))


def test_update_equals_analyze_and_the_tables_read_back_exactly(tmp_path):
    model = tiny_bert()
    tr = specbound.Tracker(tmp_path / "t", bounds=BOUNDS)
    scalars = tr.update(model, step=10, epoch=0.5, metrics={"train_loss": torch.tensor(0.25), "skip": "text"})
    rep = specbound.analyze(model, bounds=BOUNDS)
    track = pd.read_csv(tmp_path / "t" / TRACK_FILE)
    assert list(track.columns[:3]) == ["step", "epoch", "train_loss"] and "skip" not in track.columns
    row = track.iloc[0]
    for name, b in rep.bounds.items():
        assert row[f"log10_{name}"] == b.log10_value  # exact: CSV floats round-trip
        assert scalars[f"specbound/log10_{name}"] == b.log10_value
    assert row["frac_p_star_zero"] == float((rep.matrices["p_star"] == 0).mean())
    assert row["median_log10_scale_margin"] == pytest.approx(rep.adaptivity["median_log10_scale_margin"], rel=1e-12)
    layers = pd.read_csv(tmp_path / "t" / LAYERS_FILE)
    assert list(layers.columns) == ["step", "epoch", "layer", "kind", "sigma1", "mean_stable_rank",
                                    "mean_effective_rank", "frac_p_star_zero"]
    assert layers["kind"].tolist() == ["QK", "OV", "M_in", "M_out"] * 2
    qk1 = rep.matrices[(rep.matrices["layer"] == 1) & (rep.matrices["kind"] == "QK")]["spectral_norm"].max()
    assert layers.iloc[4]["sigma1"] == qk1 == scalars["specbound/sigma1_QK_layer1"]
    assert tr.last_report.options["device"] == "cpu"  # the model's own device
    assert not [p for p in (tmp_path / "t").iterdir() if p.name.startswith(".")]


def test_one_row_per_step_replace_rewind_and_continue(tmp_path):
    model = tiny_bert()
    out = tmp_path / "t"
    tr = specbound.Tracker(out, bounds=["edelman"])
    for step in (1, 2, 3):
        nudge(model, seed=step)
        tr.update(model, step=step, metrics={"loss": 1.0 / step})
    tr.update(model, step=2, metrics={"loss": 9.0})  # the same step again: replaced, kept in order
    assert tr.steps == [1, 2, 3] and tr.frame().set_index("step").loc[2, "loss"] == 9.0
    assert tr.set_metrics(3, {"eval_loss": 0.7}) and not tr.set_metrics(99, {"eval_loss": 0.1})
    cols = list(tr.frame().columns)
    assert cols.index("eval_loss") < cols.index("log10_edelman")  # the metrics come first
    tr.rewind(2)
    assert pd.read_csv(out / TRACK_FILE)["step"].tolist() == [1, 2]
    assert sorted(pd.read_csv(out / LAYERS_FILE)["step"].unique()) == [1, 2]
    again = specbound.Tracker(out, bounds=["edelman"])  # a restarted loop continues the table
    again.update(model, step=3)
    track = pd.read_csv(out / TRACK_FILE)
    assert track["step"].tolist() == [1, 2, 3] and track["loss"].tolist()[:2] == [1.0, 9.0]
    assert math.isnan(track["loss"].iloc[2])


def test_reuse_recomputes_only_changed_blocks(model):
    tr = specbound.Tracker(bounds=["spectrum_adaptive"])
    m = tiny_bert()
    tr.update(m, step=0)
    nudge(m, layers=(1,))
    tr.update(m, step=1)
    tr.update(m, step=2)  # nothing changed
    # 5 blocks per layer: qk, ov, m_in, m_out and the value-path link vo
    assert tr.frame()["blocks_computed"].tolist() == [10, 5, 0]
    assert tr.frame()["blocks_reused"].tolist() == [0, 5, 10]
    assert tr.store.computed[(0, "qk")] == 1 and tr.store.computed[(1, "qk")] == 2
    off = specbound.Tracker(bounds=["spectrum_adaptive"], reuse=False)
    off.update(m, step=2)
    assert off.frame()["log10_spectrum_adaptive"].iloc[0] == tr.frame()["log10_spectrum_adaptive"].iloc[2]


def test_options_reach_the_analysis(model):
    tr = specbound.Tracker(bounds="edelman", dtype="float32", ff_method="svd", l_phi=1.0, grid_m=5)
    tr.update(model, step=0)
    opts = tr.last_report.options
    assert (opts["dtype"], opts["ff_method"], opts["l_phi"], opts["grid_m"]) == ("float32", "svd", 1.0, 5)
    assert tr.frame().columns.tolist().count("log10_edelman") == 1


def test_a_wrapped_model_is_found(model):
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(2, 2)
            self.net = model

    a = specbound.Tracker(bounds=["edelman"]).update(Wrapper(), step=0)
    b = specbound.Tracker(bounds=["edelman"], submodule="net").update(Wrapper(), step=0)
    assert a == b == specbound.Tracker(bounds=["edelman"]).update(model, step=0)
    with pytest.raises(specbound.InputError, match="no attribute path"):
        specbound.Tracker(bounds=["edelman"], submodule="nope").update(Wrapper(), step=0)


def test_disabled_or_in_memory_trackers_write_nothing(tmp_path, model):
    off = specbound.Tracker(tmp_path / "off", enabled=False)
    assert off.update(model, step=1) == {} and off.steps == [] and not (tmp_path / "off").exists()
    mem = specbound.Tracker(bounds=["edelman"])
    mem.update(model, step=1)
    assert mem.steps == [1] and mem.close() == []
    with pytest.raises(specbound.InputError, match="no out folder"):
        mem.plot()


@pytest.mark.parametrize("kwargs, match", [
    ({"bounds": "nope"}, "nope"),
    ({"bounds": []}, "none given"),
    ({"bounds": ["spectrum_adaptive"], "grid_m": 0}, "grid_m"),
    ({"l_phi": -1.0}, "l_phi"),
    ({"device": "tpu"}, "tpu"),
    ({"submodule": ""}, "submodule"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(specbound.InputError, match=match):
        specbound.Tracker(**kwargs)


def test_bad_step_and_out(tmp_path, model):
    tr = specbound.Tracker()
    for step in (-1, 1.5, True):
        with pytest.raises(specbound.InputError, match="step"):
            tr.update(model, step=step)
    (tmp_path / "f").write_text("")
    with pytest.raises(specbound.InputError, match="not a folder"):
        specbound.Tracker(tmp_path / "f")
