"""E3 sweep: grid files, data construction, the --quick sweep locally, on Ray, and resumed
after being killed; the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from specbound.errors import InputError
from specbound.experiments import correlation as e3
from specbound.experiments.common import ProgressEvent

pytest.importorskip("transformers")


# --------------------------------------------------------------------------- configuration


def test_default_and_quick_grids():
    d = e3.expand_grid(e3.default_config())
    assert len(d) == 2 ** 7 and len({s.model_id for s in d}) == len(d)
    assert e3.default_config().swept_axes == list(e3.AXES)
    q = e3.expand_grid(e3.quick_config())
    assert len(q) == 16 and {s.hp_dict["width"] for s in q} == {32}
    assert e3.quick_config().swept_axes == ["depth", "n_train", "label_noise", "steps"]


def test_load_grid_yaml_and_json(tmp_path):
    y = tmp_path / "g.yaml"
    y.write_text("task: masked-synthetic\naxes:\n  depth: [1, 3]\n  lr: [0.001, 0.01, 0.1]\n"
                 "base:\n  width: 48\nsettings:\n  n_test: 100\n")
    cfg = e3.load_grid(y, seed=3)
    assert cfg.task == "masked-synthetic" and cfg.seed == 3 and cfg.settings_dict["n_test"] == 100
    specs = e3.expand_grid(cfg)
    assert len(specs) == 6 and {s.hp_dict["width"] for s in specs} == {48}
    assert cfg.swept_axes == ["depth", "lr"]
    j = tmp_path / "g.json"
    j.write_text(json.dumps({"axes": {"n_train": [10, 20]}}))
    cfg = e3.load_grid(j, task="sparse-majority")
    assert cfg.task == "sparse-majority" and len(e3.expand_grid(cfg)) == 2


@pytest.mark.parametrize("text, match", [
    ('{"axes": {"dept": [1, 2]}}', "unknown axes entry \\['dept'\\]"),
    ('{"axes": {"depth": [1, 2]}, "extra": 1}', "unknown key"),
    ('{"axes": {"depth": [0, 2]}}', "axis 'depth': value 0 is not a positive integer"),
    ('{"axes": {"label_noise": [0.0, 0.6]}}', "label_noise.*0.6.*\\[0, 0.5\\)"),
    ('{"axes": {"width": [24]}}', "not a multiple of settings.head_dim = 16"),
    ('{"axes": {"lr": [0.1, 0.1]}}', "repeats a value"),
    ('{"axes": {"lr": 0.1}}', "must be a list"),
    ('{"axes": {"lr": [0.1]}, "settings": {"support": 4}}', "support must be odd"),
    ('{"axes": {"lr": [0.1]}, "task": "vision"}', "unknown task 'vision'"),
    ('{"axes": ', "cannot parse"),
    ('{"axes": {"lr": [0.1]}}', "no axis has two or more values"),
])
def test_bad_grid_files_name_the_problem(tmp_path, text, match):
    p = tmp_path / "grid.json"
    p.write_text(text)
    with pytest.raises(InputError, match=match) as ei:
        e3.load_grid(p)
    assert str(p) in str(ei.value)


def test_missing_grid_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        e3.load_grid(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- data


def test_sparse_majority_data_nested_and_noisy():
    cfg = e3.quick_config(seed=5)
    s = cfg.settings_dict
    clean = e3.make_task_data(cfg, 4000, 0.0)
    noisy = e3.make_task_data(cfg, 4000, 0.2)
    assert clean.train_x.shape == (4000, s["seq_len"] + 1) and (clean.train_x[:, 0] == 2).all()
    assert set(np.unique(clean.train_x[:, 1:])) == {0, 1}
    # labels are the majority of the hidden support
    sup = clean.extra["support"]
    assert len(sup) == s["support"]
    np.testing.assert_array_equal(clean.train_y, (clean.train_x[:, 1:][:, sup].sum(1) > s["support"] // 2))
    # same inputs at every noise level; the noise rate is ~0.2 on train and on test
    np.testing.assert_array_equal(clean.train_x, noisy.train_x)
    np.testing.assert_array_equal(clean.test_x, noisy.test_x)
    assert abs(np.mean(clean.train_y != noisy.train_y) - 0.2) < 0.03
    assert abs(np.mean(noisy.test_y != noisy.clean_test_y) - 0.2) < 0.03
    # a smaller pool is a prefix of a larger one (nested training sets, same test set)
    small = e3.make_task_data(cfg, 100, 0.2)
    np.testing.assert_array_equal(small.train_x, noisy.train_x[:100])
    np.testing.assert_array_equal(small.train_y, noisy.train_y[:100])
    np.testing.assert_array_equal(small.test_y, noisy.test_y)
    # another seed: another task instance
    other = e3.make_task_data(e3.quick_config(seed=6), 100, 0.0)
    assert not np.array_equal(other.train_x, small.train_x)


def test_masked_synthetic_noise_replaces_words_only():
    cfg = e3.quick_config(task="masked-synthetic")
    a = e3.make_task_data(cfg, 50, 0.0)
    b = e3.make_task_data(cfg, 50, 0.3)
    special = a.train_x < 5
    np.testing.assert_array_equal(a.train_x[special], b.train_x[special])
    changed = np.mean(a.train_x[~special] != b.train_x[~special])
    assert 0.2 < changed < 0.35  # 0.3, minus replacements that drew the same word
    np.testing.assert_array_equal(b.clean_test_x, a.test_x)
    small = e3.make_task_data(cfg, 20, 0.3)  # nested training sets, same test set
    np.testing.assert_array_equal(small.train_x, b.train_x[:20])
    np.testing.assert_array_equal(small.test_x, b.test_x)


def test_masked_synthetic_sweep_runs(tmp_path):
    grid = tmp_path / "m.json"
    grid.write_text(json.dumps({"task": "masked-synthetic", "axes": {"steps": [3, 6]},
                                "base": {"width": 32, "depth": 1, "n_train": 16},
                                "settings": {"n_test": 16, "seq_len": 16}}))
    res = e3.run_sweep(e3.load_grid(grid), tmp_path / "out", jobs=1, plots=False)
    m = res["models"]
    assert list(m["steps"]) == [3, 6] and (m["task"] == "masked-synthetic").all()
    assert m[["train_acc", "test_acc", "gap", "loss_gap"]].notna().all().all()
    assert "log10_spectrum_adaptive" in m.columns and "log10_bartlett_spectral" in m.columns


# --------------------------------------------------------------------------- the quick sweep


@pytest.fixture(scope="module")
def quick_local(tmp_path_factory):
    out = tmp_path_factory.mktemp("e3-local")
    events: list[ProgressEvent] = []
    res = e3.run_sweep(e3.quick_config(seed=0), out, jobs=2, progress=events.append, plots=True)
    return out, res, events


def test_quick_sweep_outputs(quick_local):
    out, res, events = quick_local
    models, scores = res["models"], res["scores"]
    assert len(models) == 16 and not res["failed"]
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "end"
    assert sum(e.kind == "run" and not e.cached for e in events) == 16
    for col in ("model_id", "depth", "width", "n_train", "weight_decay", "lr", "label_noise", "steps",
                "train_acc", "test_acc", "gap", "loss_gap", "test_acc_clean", "n_params"):
        assert col in models.columns
    np.testing.assert_allclose(models["gap"], models["train_acc"] - models["test_acc"])
    assert models["gap"].max() > 0.1  # noisy small-n models memorise: the sweep spans gaps
    measures = [c for c in models.columns if c.startswith("log10_")]
    assert {"log10_spectrum_adaptive", "log10_edelman", "log10_trauger_tewari_l11",
            "log10_spectrum_adaptive_per_sqrt_n", "log10_inv_sqrt_n"} <= set(measures)
    assert np.isfinite(models[measures].to_numpy()).all()
    np.testing.assert_allclose(models["log10_spectrum_adaptive_per_sqrt_n"],
                               models["log10_spectrum_adaptive"] - 0.5 * np.log10(models["n_train"]))
    # scores: one row per target and measure, recomputable from models.csv
    assert set(scores["target"]) == {"gap", "loss_gap"}
    assert len(scores) == 2 * len(measures)
    from specbound.experiments.correlation_scores import kendall_tau

    row = scores[(scores["target"] == "gap") & (scores["measure"] == "spectrum_adaptive")].iloc[0]
    assert row["kendall_tau"] == pytest.approx(kendall_tau(models["log10_spectrum_adaptive"], models["gap"]))
    assert row["n_models"] == 16 and row["n_coupled_pairs"] <= 4 * 8
    g = scores[scores["target"] == "gap"]
    assert list(g["rank"]) == list(range(1, len(g) + 1))
    assert g["granulated_tau_mean"].is_monotonic_decreasing
    # files on disk
    on_disk = pd.read_csv(out / "models.csv")
    assert len(on_disk) == 16 and list(on_disk.columns) == list(models.columns)
    assert (out / "ranking.png").stat().st_size > 1000 and (out / "ranking_loss_gap.png").is_file()
    assert len(list((out / "plots").glob("scatter_*.png"))) == len(measures)
    meta = json.loads((out / "config.json").read_text())
    assert meta["seed"] == 0 and meta["config"]["quick"] is True and "torch" in meta["versions"]
    assert meta["models_reused_from_cache"] == 0 and len(list((out / "models").glob("*.pt"))) == 16


def test_rerun_reuses_every_model_and_reproduces(quick_local, tmp_path):
    out, res, _ = quick_local
    events: list[ProgressEvent] = []
    again = e3.run_sweep(e3.quick_config(seed=0), out, jobs=1, progress=events.append, plots=False)
    assert sum(e.kind == "run" and e.cached for e in events) == 16
    assert again["config"]["models_reused_from_cache"] == 16
    pd.testing.assert_frame_equal(again["models"], res["models"])


def test_ray_local_gives_identical_models_csv(quick_local, tmp_path):
    pytest.importorskip("ray")
    out, _, _ = quick_local
    ray_out = tmp_path / "ray"
    try:
        e3.run_sweep(e3.quick_config(seed=0), ray_out, ray_address="local", plots=False)
    finally:
        import ray

        ray.shutdown()
    assert (ray_out / "models.csv").read_bytes() == (out / "models.csv").read_bytes()
    assert (ray_out / "scores.csv").read_bytes() == (out / "scores.csv").read_bytes()


def test_killed_sweep_resumes_without_retraining(quick_local, tmp_path):
    out, _, _ = quick_local
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "specbound.cli", "experiment", "correlation", "--quick", "--jobs", "1",
           "--no-plots", "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list((run / "models").glob("*.pt"))) < 3:
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended (exit {proc.returncode}) before it could be killed")
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.stem for p in (run / "models").glob("*.pt")}
    assert 3 <= len(finished) < 16 and not (run / "models.csv").exists()
    events: list[ProgressEvent] = []
    res = e3.run_sweep(e3.quick_config(seed=0), run, jobs=2, progress=events.append, plots=False)
    reused = {e.info["model_id"] for e in events if e.kind == "run" and e.cached}
    trained = {e.info["model_id"] for e in events if e.kind == "run" and not e.cached}
    assert reused == finished and len(trained) == 16 - len(finished)
    assert (run / "models.csv").read_bytes() == (out / "models.csv").read_bytes()
    assert res["config"]["models_reused_from_cache"] == len(finished)


def test_a_stale_or_corrupt_cache_entry_is_retrained(quick_local, tmp_path):
    cfg = e3.quick_config(seed=0)
    spec = e3.expand_grid(cfg)[0]
    run = tmp_path / "c"
    (run / "models").mkdir(parents=True)
    (run / "models" / f"{spec.model_id}.pt").write_bytes(b"not a torch file")
    assert e3._load_cached(run, cfg, spec) is None
    src = quick_local[0] / "models" / f"{spec.model_id}.pt"
    assert e3._load_cached(src.parent.parent, cfg, spec) is not None
    other_seed = e3.quick_config(seed=1)
    assert e3._load_cached(src.parent.parent, other_seed, spec) is None  # key mismatch


# --------------------------------------------------------------------------- command line


def test_cli_errors(tmp_path):
    from specbound.cli import app

    r = CliRunner().invoke(app, ["experiment", "correlation", "--task", "vision", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--task 'vision'" in r.output
    bad = tmp_path / "g.json"
    bad.write_text('{"axes": {"depth": [1, "two"]}}')
    r = CliRunner().invoke(app, ["experiment", "correlation", "--grid", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and str(bad) in r.output and "'two'" in r.output
    r = CliRunner().invoke(app, ["experiment", "correlation", "--jobs", "2", "--ray", "auto"])
    assert r.exit_code == 2 and "exclude each other" in r.output


def test_cli_prints_ranking_table(tmp_path):
    from specbound.cli import app

    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"axes": {"n_train": [16, 64], "steps": [2, 4]},
                                "base": {"width": 32, "depth": 1}, "settings": {"n_test": 64}}))
    r = CliRunner().invoke(app, ["experiment", "correlation", "--grid", str(grid), "--out", str(tmp_path / "o"),
                                 "--jobs", "1", "--no-plots"])
    assert r.exit_code == 0, r.output
    assert "4 models (0 reused" in r.output and "granulated over n_train, steps" in r.output
    assert "spectrum_adaptive" in r.output and "inv_sqrt_n" in r.output
    assert (tmp_path / "o" / "scores.csv").is_file()


def test_a_failing_model_is_listed_and_the_others_scored(tmp_path, monkeypatch):
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"axes": {"n_train": [16, 32, 64]}, "base": {"width": 32, "depth": 1, "steps": 2},
                                "settings": {"n_test": 64}}))
    real_train = e3._train

    def train(model, cfg, hp, data):
        if hp["n_train"] == 32:
            raise FloatingPointError("training diverged (loss nan) at step 1")
        return real_train(model, cfg, hp, data)

    monkeypatch.setattr(e3, "_train", train)
    res = e3.run_sweep(e3.load_grid(grid), tmp_path / "o", jobs=1, plots=False)
    assert list(res["models"]["n_train"]) == [16, 64]
    assert res["failed"] == [("L1-N32-n32-wd0.01-lr0.001-noise0-steps2",
                              "FloatingPointError: training diverged (loss nan) at step 1")]
    meta = json.loads((tmp_path / "o" / "config.json").read_text())
    assert meta["models_failed"][0]["model_id"].endswith("n32-wd0.01-lr0.001-noise0-steps2")
    assert meta["measures_not_evaluated"] == {}
    assert not (tmp_path / "o" / "models" / "L1-N32-n32-wd0.01-lr0.001-noise0-steps2.pt").exists()
    monkeypatch.setattr(e3, "_train", lambda *a: (_ for _ in ()).throw(FloatingPointError("boom")))
    with pytest.raises(InputError, match="every model of the sweep failed; first error: .*boom"):
        e3.run_sweep(e3.load_grid(grid), tmp_path / "o2", jobs=1, plots=False)


def test_masked_evaluation_without_masked_tokens_is_an_error():
    cfg = e3.quick_config(task="masked-synthetic")
    model = e3._new_model(cfg, {"depth": 1, "width": 32}, 100)
    x = np.full((1, 16), 2, dtype=np.int64)  # only special tokens: nothing can be masked
    with pytest.raises(ValueError, match="no token of the 1 evaluation sequences was masked"):
        e3._evaluate(model, cfg, x, np.zeros(0), 100, 0)
