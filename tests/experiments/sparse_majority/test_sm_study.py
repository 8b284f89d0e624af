"""E1 study (sparse_majority/study.py, plots.py): trends, and the ``--quick`` command end to
end (every file, the run cache, option errors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from specbound.experiments.sparse_majority import compute_trends


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    from typer.testing import CliRunner

    from specbound.cli import app

    out = tmp_path_factory.mktemp("e1quick")
    res = CliRunner().invoke(app, ["experiment", "sparse-majority", "--quick", "--out", str(out), "--verbose"])
    return out, res


def test_quick_cli_writes_every_file(quick_out):
    out, res = quick_out
    assert res.exit_code == 0, res.output
    assert "T=16 seed=0" in res.output  # verbose per-run lines
    runs = pd.read_csv(out / "runs.csv")
    trends = pd.read_csv(out / "trends.csv")
    meta = json.loads((out / "config.json").read_text())
    assert len(runs) == 3 * 2 and sorted(runs["T"].unique()) == [16, 32, 64]
    for col in ("train_acc", "test_acc", "val_acc", "reached_train_acc"):
        assert runs[col].between(0, 1).all(), col
    for col in ("train_loss", "test_loss", "acc_gap", "loss_gap", "l1_sum_all_variables", "l1_sum_weights_only",
                "l1_b_q", "frac_p_star_zero", "median_log10_scale_margin",
                "spec_QK0", "fro_OV1", "norm21_M_in", "epochs", "stopped_at_cap"):
        assert col in runs.columns, col
    np.testing.assert_allclose(runs["acc_gap"], runs["train_acc"] - runs["test_acc"])
    assert (runs["epochs"] <= 300).all()
    assert (runs["l1_sum_all_variables"] >= runs["l1_sum_weights_only"]).all()
    assert "l1_norm_sum" not in runs.columns
    bound_cols = [c for c in runs.columns if c.startswith("log10_")]
    assert meta["bounds_available"] is True and meta["bound_columns"] == bound_cols
    assert {"log10_spectrum_adaptive", "log10_edelman", "log10_edelman_seq_len"} <= set(bound_cols)
    assert "log10_edelman_logT" not in bound_cols
    assert np.isfinite(runs[bound_cols].to_numpy()).all()
    assert {"acc_gap", "l1_sum_all_variables", *bound_cols} <= set(trends["quantity"])
    # every trend twice (all runs; fitted runs only) with the capped runs per T
    assert set(trends["runs"]) == {"all", "fitted"}
    assert (trends.groupby("quantity").size() == 2).all()
    n_cap = int(runs["stopped_at_cap"].sum())
    assert (trends["n_capped"] == n_cap).all()
    assert meta["runs_stopped_at_cap_per_T"] == {str(T): int(runs[runs["T"] == T]["stopped_at_cap"].sum())
                                                 for T in (16, 32, 64)}
    assert "T=16:" in trends["capped_per_T"].iloc[0]
    assert meta["deviations"] and "protocol_deviations" not in meta
    assert "fitted" in res.output and "epoch cap per T" in " ".join(res.output.split())
    assert {"slope_per_doubling", "ci_low", "ci_high", "ci_contains_zero"} <= set(trends.columns)
    ok = trends["slope_per_doubling"].notna()  # fitted rows are empty where every run is capped
    assert (trends.loc[ok, "ci_low"] <= trends.loc[ok, "slope_per_doubling"]).all()
    for key in ("python", "torch", "numpy", "specbound"):
        assert key in meta["versions"]
    assert meta["seed"] == 0 and meta["wall_time_seconds"] > 0
    assert meta["config"]["quick"] is True and meta["quick_deviations"]
    # the CLI's default protocol is the fit preset; every setting round-trips through config.json
    from specbound.experiments.sparse_majority import FIT_CHANGES, SparseMajorityConfig, quick_config

    assert "protocol fit" in res.output
    assert SparseMajorityConfig.from_dict(meta["config"]) == quick_config("fit", seed=0, num_threads=1)
    assert meta["protocol"]["name"] == "fit" and meta["protocol"]["changes_from_literal"] == FIT_CHANGES
    assert meta["protocol"]["settings"]["optimizer"] == meta["config"]["optimizer"] == "adam"
    assert "max_epochs" in meta["protocol"]["differs_from_literal"]
    for name in ["plot_acc_gap.png", "plot_l1_sum_all_variables.png", "plot_l1_sum_weights_only.png",
                 *[f"plot_{c}.png" for c in bound_cols]]:
        assert (out / name).stat().st_size > 1000, name


def test_quick_cli_rerun_reuses_cache(quick_out):
    from typer.testing import CliRunner

    from specbound.cli import app

    out, _ = quick_out
    before = pd.read_csv(out / "runs.csv")
    trends_before = (out / "trends.csv").read_text()
    meta_before = json.loads((out / "config.json").read_text())
    res = CliRunner().invoke(app, ["experiment", "sparse-majority", "--quick", "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "config.json" in res.output and "and plots" not in res.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["runs_reused_from_cache"] == 6
    after = pd.read_csv(out / "runs.csv")
    pd.testing.assert_frame_equal(before, after)
    assert (out / "trends.csv").read_text() == trends_before
    volatile = {"wall_time_seconds", "runs_reused_from_cache", "versions", "files"}
    assert {k: v for k, v in meta.items() if k not in volatile} == \
        {k: v for k, v in meta_before.items() if k not in volatile}


def test_literal_protocol_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from specbound.cli import app
    from specbound.experiments.sparse_majority import PROTOCOLS

    out = tmp_path / "lit"
    res = CliRunner().invoke(app, ["experiment", "sparse-majority", "--quick", "--protocol", "literal",
                                   "--lengths", "10,12", "--seeds", "1", "--max-epochs", "20", "--n-test", "50",
                                   "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "config.json").read_text())
    lit = {k: v for k, v in PROTOCOLS["literal"].items() if k not in ("protocol", "max_epochs")}
    assert meta["protocol"]["name"] == "literal" and meta["protocol"]["changes_from_literal"] == []
    assert {k: meta["protocol"]["settings"][k] for k in lit} == lit
    assert meta["protocol"]["differs_from_literal"] == {"max_epochs": 20}


@pytest.mark.parametrize("args,needle", [
    (["--lengths", "16,abc"], "--lengths"),
    (["--lengths", "4,16"], "s = 9"),
    (["--seeds", "0"], "--seeds"),
    (["--max-epochs", "-3"], "--max-epochs"),
    (["--seed", "-1"], "--seed"),
    (["--lengths", "16"], "at least two lengths"),
    (["--protocol", "fast"], "--protocol"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, args, needle):
    from typer.testing import CliRunner

    from specbound.cli import app

    res = CliRunner().invoke(app, ["experiment", "sparse-majority", "--quick", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert needle in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o" / "runs.csv").exists()


def test_trends_slopes_and_degenerate_columns():
    """One row per numeric quantity that is not bookkeeping; the slope is per doubling of T;
    a quantity with too few finite values gets an empty slope and interval, never an error."""
    T = np.repeat([16, 32, 64], 2)
    runs = pd.DataFrame({"T": T, "seed": [0, 1] * 3, "stopped_at_cap": [True] * 6, "train_seconds": 1.0,
                         "grows": 3 + 0.5 * np.log2(T) + np.array([0.01, -0.01] * 3),
                         "flat": 2.0, "sparse": [1.0] + [math.nan] * 5, "name": list("abcdef")})
    tr = compute_trends(runs)
    tr = tr[tr["runs"] == "all"].set_index("quantity")
    assert list(tr.index) == ["grows", "flat", "sparse"]
    assert tr.loc["grows", "slope_per_doubling"] == pytest.approx(0.5, rel=1e-12)
    assert tr.loc["grows", "ci_low"] < 0.5 < tr.loc["grows", "ci_high"]
    assert not tr.loc["grows", "ci_contains_zero"]
    assert tr.loc["flat", "slope_per_doubling"] == 0.0 and tr.loc["flat", "ci_contains_zero"]
    assert tr.loc["sparse", "n"] == 1 and pd.isna(tr.loc["sparse", "slope_per_doubling"])
    assert pd.isna(tr.loc["sparse", "ci_low"]) and pd.isna(tr.loc["sparse", "ci_contains_zero"])
    assert tr.loc["sparse", "mean"] == 1.0


def test_trends_twice_all_runs_and_fitted_only():
    """A capped run pulls the all-runs slope; the fitted-only slope leaves it out; the number of
    capped runs per T stands beside both."""
    T = np.repeat([16, 32, 64], 2)
    capped = [False, False, False, False, False, True]
    y = 1.0 + 0.25 * np.log2(T)
    y[-1] += 3.0  # the capped run at T = 64 is an outlier
    runs = pd.DataFrame({"T": T, "seed": [0, 1] * 3, "stopped_at_cap": capped, "train_seconds": 1.0, "y": y})
    tr = compute_trends(runs).set_index("runs")
    assert list(tr["quantity"]) == ["y", "y"]
    assert tr.loc["fitted", "slope_per_doubling"] == pytest.approx(0.25, rel=1e-12)
    assert tr.loc["fitted", "n"] == 5 and tr.loc["all", "n"] == 6
    assert tr.loc["all", "slope_per_doubling"] > 0.25 + 0.5
    assert (tr["n_capped"] == 1).all()
    assert tr.loc["all", "capped_per_T"] == "T=16:0/2 T=32:0/2 T=64:1/2"
