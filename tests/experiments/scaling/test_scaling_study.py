"""E2 study (scaling/study.py, plots.py): the tiny synthetic run end to end (tables, fits,
plots, config, checkpoint reuse), the miniatures from a cache, grid files, and the command's
errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import exp_golden_cases as gc
from specbound.errors import InputError

pytest.importorskip("transformers")


def test_tiny_synthetic_run_writes_every_table_and_plot(e2_tiny) -> None:
    """The ``--quick`` code path (synthetic family: train, analyse, fit, plot) on a 2 x 2 grid
    with a few training steps (the golden configuration; the real --quick preset trains 6 models
    for 300 steps, see the README)."""
    out, res, _ = e2_tiny
    expected = ["models.csv", "exponents.csv", "norms.csv", "config.json", "proxy_vs_N.png", "proxy_vs_L.png",
                "term_curves.png", "singular_values.png", "norms_vs_N.png"]
    for f in expected:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    for f in expected[4:]:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(map(str, res.files)) == sorted(str(out / f) for f in expected)
    models = pd.read_csv(out / "models.csv")
    Ls, Ns = gc.E2_GRID
    assert sorted(zip(models["L"], models["N"])) == [(L, N) for L in Ls for N in Ns]
    log_cols = [c for c in models if c.startswith("log10_")]
    assert {"log10_spectrum_adaptive", "log10_edelman"} <= set(log_cols)
    assert np.isfinite(models[log_cols + ["mean_p_star", "sum_spectral", "sum_norm_21", "sum_norm_11"]].to_numpy(float)).all()
    assert (models["log10_spectrum_adaptive"] <= models["log10_sa_p0_cap"] + 1e-9).all()  # p = 0 is on the grid
    assert models["frac_p_star_zero"].between(0, 1).all()
    assert "median_log10_scale_margin" in models.columns  # B_SA's adaptivity (issue 12 part 2)
    assert np.isfinite(models["median_log10_scale_margin"].to_numpy(float)).all()
    assert (models["H"] == models["N"] // 32).all() and (models["source"].str.startswith("checkpoints")).all()
    assert models[["heldout_masked_ce", "unigram_masked_ce", "train_loss_last10pct"]].notna().all().all()
    assert not models["reused"].any()
    ex = pd.read_csv(out / "exponents.csv")
    assert set(ex["family"]) >= {"spectrum_adaptive", "edelman", "sa_p0_cap"}
    assert ex["slope"].notna().all() and np.isfinite(ex["slope"]).all()
    two = ex[ex["n_points"] == 2]  # 2 x 2 grid: every per-L / per-N fit has 2 points
    assert len(two) and two["ci_low"].isna().all() and two["interval"].str.contains("not computable").all()
    # the intervals measure lack of fit over single checkpoints, and say so (issue 12 part 5)
    assert ex["interval_measures"].str.contains("lack of fit").all()
    assert ex["interval_measures"].str.contains("single checkpoints").all()
    pooled = ex[ex["fixed"] == "all"]  # 4 points, 3 coefficients: df = 1
    assert len(pooled) and (pooled["interval"] == "95% t, df=1").all()
    assert ((pooled["ci_low"] <= pooled["slope"]) & (pooled["slope"] <= pooled["ci_high"])).all()
    norms = pd.read_csv(out / "norms.csv")
    assert set(norms["kind"]) == {"QK", "OV", "M_in", "M_out"} and len(norms) == 4 * len(models)
    assert np.isfinite(norms[["mean_spectral", "mean_norm_21", "mean_norm_11"]].to_numpy(float)).all()
    assert (norms["mean_norm_11"] >= norms["mean_norm_21"] - 1e-9).all()  # ‖A‖₁,₁ ≥ ‖A‖₂,₁ column by column
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == gc.E2_SEED and cfg["config"]["quick"] is True and cfg["wall_time_seconds"] > 0
    assert cfg["versions"]["torch"] == torch.__version__ and cfg["recipe"]["steps"] == gc.E2_RECIPE["steps"]
    assert cfg["grid"] == {"L": list(Ls), "N": list(Ns)} and cfg["featured_model"] == "L2_N64"
    assert "lack of fit" in cfg["exponent_intervals"]


def test_progress_events_count_the_units_of_work(e2_tiny) -> None:
    """start announces 2 units per grid point (train, analyse); every unit ends with one run
    event numbered 1..total; end comes last; training steps arrive as status lines."""
    _, res, events = e2_tiny
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == kinds.count("end") == 1
    n = len(res.models)
    total = events[0].total
    assert total == 2 * n == 8
    runs = [e for e in events if e.kind == "run"]
    assert [e.done for e in runs] == list(range(1, total + 1)) and all(e.total == total for e in runs)
    assert [e.info["step"] for e in runs] == ["train"] * n + ["analyse"] * n
    assert {e.info["name"] for e in runs} == set(res.models["name"])
    assert not any(e.cached for e in runs)  # a fresh folder: every point trained
    assert any(e.kind == "group" and "step" in e.message for e in events)
    assert events[-1].done == total


def test_rerun_reuses_the_checkpoint_and_reproduces(e2_tiny, tmp_path: Path) -> None:
    """A finished checkpoint (same recipe and seed) is reused, not retrained, and gives the
    same row; a one-model grid has no exponent rows but still every file."""
    import shutil

    from specbound.experiments.scaling import Recipe, ScalingConfig, run_scaling

    out, res, _ = e2_tiny
    again_out = tmp_path / "again"
    shutil.copytree(out / "checkpoints" / "L1_N32", again_out / "checkpoints" / "L1_N32")
    events: list[Any] = []
    again = run_scaling(ScalingConfig(family="synthetic", quick=True, out=again_out, seed=gc.E2_SEED),
                        synthetic_grid=((1,), (32,)), recipe=Recipe(**gc.E2_RECIPE), progress=events.append)
    assert list(again.models["reused"]) == [True] and len(again.exponents) == 0
    assert [(e.info["step"], e.cached) for e in events if e.kind == "run"] == [("train", True), ("analyse", False)]
    cols = [c for c in res.models.columns if c not in ("reused", "train_seconds")]
    pd.testing.assert_frame_equal(again.models[cols], res.models[res.models["name"] == "L1_N32"][cols])
    assert all(Path(f).is_file() for f in again.files)


def test_miniatures_run_on_the_cached_ones(fake_cache: Path, tmp_path: Path) -> None:
    from specbound.experiments.scaling import ScalingConfig, run_scaling

    events: list[Any] = []
    res = run_scaling(ScalingConfig(family="miniatures", out=tmp_path / "out"), progress=events.append)
    assert list(res.models["name"]) == ["L2_N128", "L2_N256"]
    assert list(res.models["source"]) == ["google/bert_uncased_L-2_H-128_A-2", "google/bert_uncased_L-2_H-256_A-4"]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert len(cfg["missing"]) == 22 and cfg["missing"][0]["source"].startswith("google/bert_uncased_L-")
    ex = pd.read_csv(tmp_path / "out" / "exponents.csv")
    assert set(ex["x"]) == {"log10_N"} and ex["interval"].str.contains("only 2 points").all()
    starts = [e for e in events if e.kind == "start"]
    assert len(starts) == 1 and starts[0].total == 2  # the two cached miniatures are the units of work
    assert [e.done for e in events if e.kind == "run"] == [1, 2] and events[-1].kind == "end"


def test_offline_without_cache_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from specbound.cli import app

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from specbound.experiments.scaling import ScalingConfig, run_scaling

    with pytest.raises(InputError, match="--family synthetic"):
        run_scaling(ScalingConfig(family="miniatures", out=tmp_path / "o"))
    r = CliRunner().invoke(app, ["experiment", "scaling", "--family", "miniatures", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 1
    msg = r.stderr.strip() if hasattr(r, "stderr") else r.output.strip()
    assert "none of the 24 BERT miniatures" in msg and "--family synthetic" in msg
    assert "Traceback" not in r.output


def test_grid_file_with_wrong_depth_is_an_error(fake_cache: Path, tmp_path: Path) -> None:
    from specbound.experiments.scaling import ScalingConfig, run_scaling

    snap = fake_cache / "models--google--bert_uncased_L-2_H-128_A-2" / "snapshots" / ("a" * 40)
    (tmp_path / "g.json").write_text(json.dumps([{"source": str(snap), "L": 4, "N": 128}]))
    with pytest.raises(InputError, match=r"the grid says L=4, N=128 but the checkpoint has L=2, N=128"):
        run_scaling(ScalingConfig(family=str(tmp_path / "g.json"), out=tmp_path / "o"))


def test_unreadable_checkpoint_is_listed_and_the_rest_analysed(fake_cache: Path, tmp_path: Path) -> None:
    from specbound.experiments.scaling import ScalingConfig, run_scaling

    snap = fake_cache / "models--google--bert_uncased_L-2_H-128_A-2" / "snapshots" / ("a" * 40)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bad / "model.safetensors").write_bytes(b"\x00" * 4)  # truncated
    (tmp_path / "g.csv").write_text(f"source,L,N\n{snap},2,128\nbad,4,256\n")
    res = run_scaling(ScalingConfig(family=str(tmp_path / "g.csv"), out=tmp_path / "o"))
    assert list(res.models["name"]) == ["L2_N128"]
    assert len(res.missing) == 1 and res.missing[0]["name"] == "L4_N256"
    assert res.missing[0]["reason"].startswith("analysis failed:") and "safetensors" in res.missing[0]["reason"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--family", "nonsense"], "use miniatures, synthetic or a .csv/.json grid file"),
        (["--family", "missing.csv"], "no such grid file"),
        (["--seed", "-1"], "--seed -1"),
        (["--threads", "0"], "--threads 0"),
        (["--device", "warp9"], "not a torch device"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], match: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from specbound.cli import app

    r = CliRunner().invoke(app, ["experiment", "scaling", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    text = (r.stderr if hasattr(r, "stderr") else r.output).strip()
    assert match in text and len(text.splitlines()) == 1 and "Traceback" not in text


def test_printed_exponents_say_lack_of_fit_and_show_adaptivity(e2_tiny) -> None:
    from rich.console import Console

    from specbound.cli.experiment.scaling import _print_exponents

    _, res, _ = e2_tiny
    con = Console(record=True, width=240)
    _print_exponents(con, res.exponents, res.models)
    text = " ".join(con.export_text().split())
    assert "lack of fit" in text and "not sampling error" in text
    assert "frac_p_star_zero" in text and "median log10 scale margin" in text


# -- golden numbers (tests/experiments/test_golden.py has the others): here so that the session
# fixture is computed in the one worker that runs this file


def test_e2_matches_golden(e2_tiny) -> None:
    out, _, _ = e2_tiny
    _golden_check("e2", gc.normalise(out, ["models.csv", "exponents.csv", "norms.csv"]))




def _golden_check(name: str, new: dict) -> None:
    diffs = gc.compare(gc.load(name), new, name)
    assert not diffs, "\n".join(diffs[:20])


def test_page_and_notebook_display(e2_tiny) -> None:
    """OUT/report.html of the tiny run: every section, the run's PNGs embedded, the models and
    exponents tables; the short repr names the pooled slopes, the notebook display is tables only."""
    from pagecheck import check_page
    from report.test_html import parse

    from specbound.report.experiments import write_experiment_page

    out, res, _ = e2_tiny
    page = write_experiment_page("scaling", res, out)
    assert page == out / "report.html"
    pngs = [Path(f) for f in res.files if str(f).endswith(".png")]
    p = check_page(page, ["run", "models", "exponents", "norms", "plots", "skipped", "files"], pngs)
    assert len(p.images) == 5
    assert {"log10_spectrum_adaptive", "log10_edelman", "frac_p_star_zero", "slope", "95% interval"} <= set(p.headers)
    text = page.read_text(encoding="utf-8")
    for name in res.models["name"]:
        assert f"<td>{name}</td>" in text
    assert f"<dd>{res.config['versions']['torch']}</dd>" in text and "lack of fit" in text
    pooled = res.exponents[(res.exponents["family"] == "spectrum_adaptive") & (res.exponents["fixed"] == "all")]
    r = repr(res)
    assert r.startswith("<specbound ScalingResult: E2 · 4 models (synthetic)") and len(r) < 600
    assert "DataFrame" not in r and f"B_SA pooled slope: {pooled['slope'].iloc[0]:.3f}" in r
    h = res._repr_html_()
    ph = parse(h)
    assert not ph.images and "<script" not in h and "exponents" in h.lower() and "L2_N64" in h


def test_cli_verbose_prints_every_unit_and_writes_the_page(fake_cache: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from specbound.cli import app

    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["experiment", "scaling", "--family", "miniatures", "--out", str(out), "--verbose"])
    assert r.exit_code == 0, r.output
    err = r.stderr if hasattr(r, "stderr") else r.output
    assert "[1/2] L2_N128: analysed, log10 B_SA" in err and "[2/2] L2_N256: analysed" in err
    assert r.stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    from pagecheck import check_page

    p = check_page(out / "report.html", ["run", "models", "exponents", "plots", "skipped"])
    assert len(p.images) == 5
    assert "bert_uncased_L-12_H-768_A-12" in (out / "report.html").read_text(encoding="utf-8")  # a missing one
