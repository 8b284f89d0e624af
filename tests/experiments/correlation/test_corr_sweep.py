"""The E3 sweep (correlation/sweep.py) on the tiny 2 x 2 golden grid: outputs, the model cache
(rerun, stale or corrupt entries, a sweep killed half-way and resumed), and Ray against the
process pool byte for byte."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specbound.experiments import correlation as e3
from specbound.experiments.common import ProgressEvent

pytest.importorskip("transformers")

N_MODELS = 4


def meta_settings(out: Path) -> dict:
    return json.loads((out / "config.json").read_text())["config"]["settings"]


def test_sweep_outputs(e3_tiny) -> None:
    out, res, events, _ = e3_tiny
    models, scores = res["models"], res["scores"]
    assert len(models) == N_MODELS and not res["failed"]
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "end"
    assert sum(e.kind == "run" and not e.cached for e in events) == N_MODELS
    for col in ("model_id", "depth", "width", "n_train", "weight_decay", "lr", "label_noise", "steps",
                "train_acc", "test_acc", "gap", "loss_gap", "test_acc_clean", "n_params"):
        assert col in models.columns
    assert sorted(zip(models["n_train"], models["steps"])) == [(16, 2), (16, 4), (64, 2), (64, 4)]
    np.testing.assert_allclose(models["gap"], models["train_acc"] - models["test_acc"])
    measures = [c for c in models.columns if c.startswith("log10_")]
    assert {"log10_spectrum_adaptive", "log10_edelman", "log10_trauger_tewari_l11", "log10_bartlett_spectral",
            "log10_spectrum_adaptive_n_adj", "log10_inv_sqrt_n", "log10_param_count_n_adj"} <= set(measures)
    assert not any(c.endswith("_per_sqrt_n") for c in measures)
    assert np.isfinite(models[measures].to_numpy()).all()
    # linear families: C / sqrt(n); squared measures: sqrt(mu / n) (Dziugaite et al.'s code)
    np.testing.assert_allclose(models["log10_spectrum_adaptive_n_adj"],
                               models["log10_spectrum_adaptive"] - 0.5 * np.log10(models["n_train"]))
    for fam in ("log_prod_spec", "sum_fro", "fro_over_spec", "param_count"):
        np.testing.assert_allclose(models[f"log10_{fam}_n_adj"],
                                   0.5 * (models[f"log10_{fam}"] - np.log10(models["n_train"])))
    # B_SA's adaptivity diagnostic beside the measures, not scored
    assert models["frac_p_star_zero"].between(0, 1).all()
    assert "median_log10_scale_margin" in models.columns
    assert not set(scores["measure"]) & {"frac_p_star_zero", "median_log10_scale_margin"}
    # scores: one row per target and measure, recomputable from models.csv
    assert set(scores["target"]) == {"gap", "loss_gap"} and len(scores) == 2 * len(measures)
    from specbound.experiments.correlation.scores import kendall_tau

    row = scores[(scores["target"] == "loss_gap") & (scores["measure"] == "spectrum_adaptive")].iloc[0]
    assert row["kendall_tau"] == pytest.approx(kendall_tau(models["log10_spectrum_adaptive"], models["loss_gap"]))
    assert row["n_models"] == N_MODELS and row["n_coupled_pairs"] == 4
    assert pd.isna(row["robust_sign_error_max"])  # Hoeffding weights need the bounded accuracy gap
    from specbound.experiments.correlation.scores import robust_sign_error

    row = scores[(scores["target"] == "gap") & (scores["measure"] == "spectrum_adaptive")].iloc[0]
    hp = models[["n_train", "steps"]].to_dict("records")
    r = robust_sign_error(models["log10_spectrum_adaptive"].tolist(), models["gap"].tolist(), hp,
                          ["n_train", "steps"], n_test=int(meta_settings(out)["n_test"]))
    assert row["n_environments"] == r.n_environments
    assert row["robust_sign_error_max"] == (pytest.approx(r.max) if r.max is not None else None) or \
        (r.max is None and pd.isna(row["robust_sign_error_max"]))
    g = scores[scores["target"] == "gap"]
    assert list(g["rank"]) == list(range(1, len(g) + 1))
    # files on disk
    on_disk = pd.read_csv(out / "models.csv")
    assert len(on_disk) == N_MODELS and list(on_disk.columns) == list(models.columns)
    assert (out / "ranking.png").stat().st_size > 1000 and (out / "ranking_loss_gap.png").is_file()
    assert len(list((out / "plots").glob("scatter_*.png"))) == len(measures)
    meta = json.loads((out / "config.json").read_text())
    assert meta["seed"] == 0 and meta["execution"] == {"jobs": 2, "ray_address": None} and "torch" in meta["versions"]
    assert meta["granulated_over"] == ["n_train", "steps"] and meta["measures"] == measures
    assert meta["scores"]["n_test"] == meta["config"]["settings"]["n_test"] and meta["scores"]["min_ess"] == 1.0
    assert meta["sample_size_adjustment"]["sum_fro"] == "sqrt(mu/n)"
    assert meta["sample_size_adjustment"]["edelman"] == "C/sqrt(n)"
    assert meta["models_reused_from_cache"] == 0 and len(list((out / "models").glob("*.pt"))) == N_MODELS


def test_rerun_reuses_every_model_and_reproduces(e3_tiny, tmp_path: Path) -> None:
    out, res, _, grid = e3_tiny
    copy = tmp_path / "copy"
    shutil.copytree(out / "models", copy / "models")
    events: list[ProgressEvent] = []
    again = e3.run_sweep(e3.load_grid(grid), copy, jobs=1, progress=events.append, plots=False)
    assert sum(e.kind == "run" and e.cached for e in events) == N_MODELS
    assert again["config"]["models_reused_from_cache"] == N_MODELS
    pd.testing.assert_frame_equal(again["models"], res["models"])
    assert (copy / "models.csv").read_bytes() == (out / "models.csv").read_bytes()


def test_a_stale_or_corrupt_cache_entry_is_retrained(e3_tiny, tmp_path: Path) -> None:
    from specbound.experiments.correlation.sweep import _load_cached

    out, _, _, grid = e3_tiny
    cfg = e3.load_grid(grid)
    spec = e3.expand_grid(cfg)[0]
    run = tmp_path / "c"
    (run / "models").mkdir(parents=True)
    (run / "models" / f"{spec.model_id}.pt").write_bytes(b"not a torch file")
    assert _load_cached(run, cfg, spec) is None
    assert _load_cached(out, cfg, spec) is not None
    assert _load_cached(out, e3.load_grid(grid, seed=1), spec) is None  # key mismatch


def test_ray_local_gives_identical_csv_files(e3_tiny, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out, _, _, grid = e3_tiny
    ray_out = tmp_path / "ray"
    try:
        e3.run_sweep(e3.load_grid(grid), ray_out, ray_address="local", plots=False)
    finally:
        import ray

        ray.shutdown()
    assert (ray_out / "models.csv").read_bytes() == (out / "models.csv").read_bytes()
    assert (ray_out / "scores.csv").read_bytes() == (out / "scores.csv").read_bytes()


#: A sweep that SIGKILLs its own process right after the second model is cached (no race:
#: the cache entry is written before the progress event of that model).
_KILLED_SWEEP = """
import os, signal, sys
from specbound.experiments.correlation import load_grid, run_sweep

def progress(ev):
    if ev.kind == "run" and ev.done == 2:
        os.kill(os.getpid(), signal.SIGKILL)

run_sweep(load_grid(sys.argv[1]), sys.argv[2], jobs=1, progress=progress, plots=False)
"""


def test_killed_sweep_resumes_without_retraining(e3_tiny, tmp_path: Path) -> None:
    import specbound

    out, _, _, grid = e3_tiny
    run = tmp_path / "killed"
    src = str(Path(specbound.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _KILLED_SWEEP, str(grid), str(run)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    finished = {p.stem for p in (run / "models").glob("*.pt")}
    assert len(finished) == 2 and not (run / "models.csv").exists()
    events: list[ProgressEvent] = []
    res = e3.run_sweep(e3.load_grid(grid), run, jobs=1, progress=events.append, plots=False)
    reused = {e.info["model_id"] for e in events if e.kind == "run" and e.cached}
    trained = {e.info["model_id"] for e in events if e.kind == "run" and not e.cached}
    assert reused == finished and len(trained) == N_MODELS - 2 and not reused & trained
    assert (run / "models.csv").read_bytes() == (out / "models.csv").read_bytes()
    assert res["config"]["models_reused_from_cache"] == 2


def test_quick_preset_grid() -> None:
    q = e3.expand_grid(e3.quick_config())
    assert len(q) == 16 and {s.hp_dict["width"] for s in q} == {32}


# -- golden numbers (tests/experiments/test_golden.py has the others): here so that the session
# fixture is computed in the one worker that runs this file
import exp_golden_cases as gc  # noqa: E402


def test_e3_sparse_majority_matches_golden(e3_tiny) -> None:
    """Trained on a pool of two worker processes with plots (the golden run: one process, no
    plots): the same numbers; config.json differs only in how it ran (``execution``, ``files``)."""
    out, _, _, _ = e3_tiny
    new = gc.normalise(out, ["models.csv", "scores.csv"])
    golden = gc.load("e3_sm")
    assert new["config.json"].pop("execution") == {"jobs": 2, "ray_address": None}
    assert golden["config.json"].pop("execution") == {"jobs": 1, "ray_address": None}
    assert set(golden["config.json"].pop("files")) <= set(new["config.json"].pop("files"))
    diffs = gc.compare(golden, new, "e3_sm")
    assert not diffs, "\n".join(diffs[:20])




def test_page_and_notebook_display(e3_tiny) -> None:
    """OUT/report.html of the tiny sweep: every section, ranking.png and the scatter plots
    embedded (each once), the ranking table; the result is still the dict, with a short repr
    naming the best-ranked measure and a notebook display of tables only."""
    from pagecheck import check_page
    from report.test_html import parse

    from specbound.report.experiments import SCATTERS_SHOWN, write_experiment_page

    out, res, _, _ = e3_tiny
    assert isinstance(res, dict) and set(res) == {"models", "scores", "config", "files", "failed"}
    page = write_experiment_page("correlation", res, out)
    pngs = [Path(f) for f in res["files"] if str(f).endswith(".png")]
    p = check_page(page, ["run", "ranking", "loss_gap", "models", "plots", "skipped", "files"], pngs)
    n_scatter = sum(f.name.startswith("scatter_") for f in pngs)
    assert n_scatter > SCATTERS_SHOWN and len(p.images) == len(pngs) > n_scatter
    text = page.read_text(encoding="utf-8")
    assert f"The other {n_scatter - SCATTERS_SHOWN} scatter plots" in text
    assert {"measure", "kendall_tau", "granulated_tau_mean", "robust_sign_error_max", "gap"} <= set(p.headers)
    gap = res["scores"][res["scores"]["target"] == "gap"].sort_values("rank")
    best = gap.iloc[0]
    assert f"<td>{best['measure']}</td>" in text
    r = repr(res)
    assert r.startswith(f"<specbound SweepResult: E3 · {N_MODELS} models (sparse-majority)") and len(r) < 600
    assert f"#1 {best['measure']}: granulated τ" in r and "DataFrame" not in r
    h = res._repr_html_()
    ph = parse(h)
    assert not ph.images and "<script" not in h and best["measure"] in h
