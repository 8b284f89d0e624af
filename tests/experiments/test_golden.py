"""The numbers of E1-E3 did not change in the issue-20 redesign: tiny configurations rerun with
today's code and compared to the golden outputs written by the code before it (every number
to 1e-12 relative, every string exactly; see exp_golden_cases.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import exp_golden_cases as gc


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check(name: str, new: dict) -> None:
    diffs = gc.compare(gc.load(name), new, name)
    assert not diffs, "\n".join(diffs[:20])


def test_comparison_can_fail() -> None:
    """The comparison itself flags a number off by more than 1e-12, a string and a shape."""
    g = {"a.csv": [["x", "y"], ["1.0", "s"]], "config.json": {"k": [1, 2.5]}}
    assert gc.compare(g, g) == []
    assert gc.compare(g, {"a.csv": [["x", "y"], ["1.0000000001", "s"]], "config.json": {"k": [1, 2.5]}})
    assert gc.compare(g, {"a.csv": [["x", "y"], ["1.0", "t"]], "config.json": {"k": [1, 2.5]}})
    assert gc.compare(g, {"a.csv": [["x", "y"]], "config.json": {"k": [1, 2.5]}})
    assert gc.compare(g, {"a.csv": [["x", "y"], ["1.0", "s"]], "config.json": {"k": [1, 2.5 * (1 + 1e-11)]}})
    assert not gc.compare(g, {"a.csv": [["x", "y"], ["1.0", "s"]], "config.json": {"k": [1, 2.5 * (1 + 1e-13)]}})
    # interval ends: relative to the half-width (here 1.0), not to their own size
    t = {"t.csv": [["slope", "ci_low", "ci_high"], ["1.0", "1e-3", "2.001"]]}
    assert not gc.compare(t, {"t.csv": [["slope", "ci_low", "ci_high"], ["1.0", repr(1e-3 + 5e-13), "2.001"]]})
    assert gc.compare(t, {"t.csv": [["slope", "ci_low", "ci_high"], ["1.0", repr(1e-3 + 5e-12), "2.001"]]})


def test_e1_matches_golden(tmp_path: Path) -> None:
    from specbound.experiments.sparse_majority import SparseMajorityConfig, run_study

    run_study(SparseMajorityConfig(**gc.E1_CONFIG), tmp_path, plots=False)
    _check("e1", gc.normalise(tmp_path, ["runs.csv", "trends.csv"]))


def test_e3_masked_matches_golden(tmp_path: Path) -> None:
    from specbound.experiments.correlation import load_grid, run_sweep

    grid = tmp_path / "e3_masked.json"
    grid.write_text(json.dumps(gc.E3_GRIDS["e3_masked"]))
    run_sweep(load_grid(grid), tmp_path / "out", jobs=1, plots=False)
    _check("e3_masked", gc.normalise(tmp_path / "out", ["models.csv", "scores.csv"]))
