"""Rewrite the E1-E3 golden outputs from the code as it is, after a change of numbers on purpose
(say so in the commit and the README). Prints every cell that changes first.

    python tests/experiments/golden/update_golden.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import exp_golden_cases as gc  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    from specbound.experiments.correlation import load_grid, run_sweep
    from specbound.experiments.scaling import ScalingConfig, run_scaling
    from specbound.experiments.scaling import Recipe
    from specbound.experiments.sparse_majority import SparseMajorityConfig, run_study

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        new = {}
        run_study(SparseMajorityConfig(**gc.E1_CONFIG), tmp / "e1", plots=False)
        new["e1"] = gc.normalise(tmp / "e1", ["runs.csv", "trends.csv"])
        run_scaling(ScalingConfig(family="synthetic", quick=True, out=tmp / "e2", seed=gc.E2_SEED),
                    synthetic_grid=gc.E2_GRID, recipe=Recipe(**gc.E2_RECIPE))
        new["e2"] = gc.normalise(tmp / "e2", ["models.csv", "exponents.csv", "norms.csv"])
        for name, grid in gc.E3_GRIDS.items():
            g = tmp / f"{name}.json"
            g.write_text(json.dumps(grid))
            run_sweep(load_grid(g), tmp / name, jobs=1, plots=False)
            new[name] = gc.normalise(tmp / name, ["models.csv", "scores.csv"])
        for name, data in new.items():
            for d in gc.compare(gc.load(name), data, name):
                print(d)
            gc.save(name, data)


if __name__ == "__main__":
    main()
