"""E4 study plumbing on a tiny config: the files, resume after an interruption (same tables),
cache invalidation, the KDE option, the command line and its usage errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from specbound.cli import app
from specbound.errors import InputError
from specbound.experiments.infinite_width import (
    InfiniteWidthConfig,
    quick_config,
    run_study,
)

TINY = dict(n_seeds=2, samples=300, relu_samples=300, n_values=(4, 8), H_values=(1, 2, 4), n_fixed=8,
            H_fixed=2, head_width=4, lowrank_H_values=(1, 2))
KL_CSV_COLUMNS = ["experiment", "n", "H", "seed", "kl_to_limit", "kl_to_gaussian", "floor"]


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("e4") / "full"
    return out, run_study(InfiniteWidthConfig(**TINY), out, plots=False)


def test_outputs(full):
    out, _ = full
    kl = pd.read_csv(out / "kl.csv")
    assert set(KL_CSV_COLUMNS) <= set(kl.columns)
    assert len(kl) == 2 * (2 + 3 + 2 + 2) and sorted(kl["seed"].unique()) == [0, 1]
    assert (kl[["kl_to_limit", "kl_to_gaussian", "kl_limit_to_gaussian", "floor"]] >= 0).all().all()
    assert len(pd.read_csv(out / "summary.csv")) == 9
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["seed"] == 0 and cfg["seeds"] == [0, 1] and "numpy" in cfg["versions"]
    assert cfg["deviations"] and cfg["units"] == 8 and cfg["units_reused_from_cache"] == 0
    head = json.loads((out / "headline.json").read_text())
    assert set(head) == {"n_sweep", "H_sweep", "relu_n_sweep", "lowrank_H_sweep"}
    assert "slope" in head["n_sweep"]["slope_kl_to_limit"] and len(head["H_sweep"]["per_H"]) == 3
    dens = json.loads((out / "densities.json").read_text())["densities"]
    assert set(dens["H_sweep"]) == {"8_1", "8_2", "8_4"}
    # the n sweep shares one limit draw across n (per seed), the low-rank sweep has n = 4 H
    assert kl[kl.experiment == "n_sweep"].groupby("seed")["var_limit"].nunique().eq(1).all()
    assert list(kl[kl.experiment == "lowrank_H_sweep"]["n"].unique()) == [4, 8]


def test_resume_after_interruption_gives_identical_tables(full, tmp_path):
    ref_out, _ = full
    out = tmp_path / "resumed"
    seen = []

    def stop_after_three(ev):
        if ev.kind == "run":
            seen.append(ev)
            if len(seen) == 3:
                raise Stop

    with pytest.raises(Stop):
        run_study(InfiniteWidthConfig(**TINY), out, progress=stop_after_three, plots=False)
    assert len(list((out / "units").glob("*.json"))) == 3 and not (out / "kl.csv").exists()
    res = run_study(InfiniteWidthConfig(**TINY), out, plots=False)
    assert res.config["units_reused_from_cache"] == 3
    for name in ("kl.csv", "summary.csv", "headline.json", "densities.json"):
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name
    # a corrupt unit is recomputed, with the same numbers
    (out / "units" / "n_sweep_seed0.json").write_text("{not json")
    res = run_study(InfiniteWidthConfig(**TINY), out, plots=False)
    assert res.config["units_reused_from_cache"] == 7
    assert (out / "kl.csv").read_bytes() == (ref_out / "kl.csv").read_bytes()


def test_a_changed_config_recomputes_and_another_seed_differs(full, tmp_path):
    _, ref = full
    out = tmp_path / "o"
    cfg = InfiniteWidthConfig(**{**TINY, "experiments": ("n_sweep",)})
    run_study(cfg, out, plots=False)
    res = run_study(InfiniteWidthConfig(**{**TINY, "experiments": ("n_sweep",), "samples": 301}), out, plots=False)
    assert res.config["units_reused_from_cache"] == 0
    other = run_study(InfiniteWidthConfig(**{**TINY, "experiments": ("n_sweep",), "seed": 5}), tmp_path / "s5",
                      plots=False)
    assert not other.kl["kl_to_limit"].equals(ref.kl[ref.kl.experiment == "n_sweep"]["kl_to_limit"].reset_index(drop=True))


def test_plots_and_the_kde_option(tmp_path):
    cfg = InfiniteWidthConfig(**{**TINY, "n_seeds": 1, "kl": "kde", "experiments": ("n_sweep", "H_sweep")})
    res = run_study(cfg, tmp_path / "k", plots=True)
    names = {p.name for p in res.files}
    assert {"kl_vs_n.png", "kl_vs_H.png", "densities.png"} <= names
    assert (res.kl["estimator"] == "kde").all() and (res.kl["grid_points"] == 500).all()
    assert all((tmp_path / "k" / n).stat().st_size > 10_000 for n in ("kl_vs_n.png", "densities.png"))


def test_bad_configs_are_errors(tmp_path):
    for bad, needle in ((dict(samples=10), "at least 100"), (dict(n_values=(2, 8)), "at least s"),
                        (dict(experiments=("x",)), "experiments"), (dict(kl="hist"), "kl"),
                        (dict(H_values=(1, 1)), "distinct")):
        with pytest.raises(InputError, match=needle):
            run_study(InfiniteWidthConfig(**{**TINY, **bad}), tmp_path / "b", plots=False)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        run_study(InfiniteWidthConfig(**TINY), f, plots=False)
    q = quick_config(samples=1000)
    assert q.quick and q.n_seeds == 2 and q.relu_samples == 2000


runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, ["experiment", "infinite-width", *args], env={"COLUMNS": "200"})


def test_cli_runs_and_reports(tmp_path):
    res = cli("--sweeps", "n,H", "--samples", "200", "--seeds", "1", "--no-plots", "--out", str(tmp_path / "c"))
    assert res.exit_code == 0, res.output
    assert "KL(finite ‖ limit) ∝ n^" in res.output and "resolved above the floor" in res.output
    kl = pd.read_csv(tmp_path / "c" / "kl.csv")
    assert set(kl["experiment"]) == {"n_sweep", "H_sweep"} and (kl["samples"] == 200).all()
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["config"]["relu_samples"] == 400 and cfg["config"]["n_seeds"] == 1


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0"], "--seeds 0: must be a positive integer."),
    (["--samples", "50"], "--samples 50: need at least 100"),
    (["--kl", "hist"], "--kl 'hist'"),
    (["--sweeps", "n,x"], "--sweeps 'n,x'"),
    (["--sweeps", ","], "--sweeps ','"),
    (["--seed", "-1"], "--seed -1"),
])
def test_bad_options_are_usage_errors(tmp_path, args, needle):
    res = cli(*args, "--out", str(tmp_path / "o"))
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_a_usage_error(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    res = cli("--out", str(f))
    assert res.exit_code == 2 and "exists and is not a folder" in res.output
