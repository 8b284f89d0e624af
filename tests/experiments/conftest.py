"""Session fixtures of the experiment tests: the tiny E2 and E3 runs (the configurations of
the golden files, exp_golden_cases.py) are made once and shared by the golden comparison and
the schema / cache / Ray / resume tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import exp_golden_cases as gc


@pytest.fixture(scope="session")
def e2_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list[Any]]:
    """The tiny synthetic E2 run: ``(out, ScalingResult, progress events)``."""
    from specbound.experiments.scaling import Recipe, ScalingConfig, run_scaling

    out = tmp_path_factory.mktemp("e2-tiny")
    events: list[Any] = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_scaling(ScalingConfig(family="synthetic", quick=True, out=out, seed=gc.E2_SEED),
                          progress=events.append, synthetic_grid=gc.E2_GRID,
                          recipe=Recipe(**gc.E2_RECIPE))
    finally:
        torch.set_num_threads(old)
    return out, res, events


def e3_grid_file(folder: Path, name: str = "e3_sm") -> Path:
    """The golden E3 grid ``name`` written as a JSON grid file in ``folder``."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(gc.E3_GRIDS[name]))
    return path


@pytest.fixture(scope="session")
def e3_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[Any], Path]:
    """The tiny sparse-majority E3 sweep (2 x 2 models) on a pool of 2 worker processes, with
    plots: ``(out, run_sweep result, progress events, grid file)``."""
    from specbound.experiments.correlation import load_grid, run_sweep

    root = tmp_path_factory.mktemp("e3-tiny")
    grid = e3_grid_file(root)
    events: list[Any] = []
    res = run_sweep(load_grid(grid), root / "out", jobs=2, progress=events.append, plots=True)
    return root / "out", res, events, grid


@pytest.fixture
def one_torch_thread():
    """Training on one torch thread for the test (bit-reproducible, as the experiments run it)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
