"""Write the golden outputs of the tiny E1-E3 configurations from the code BEFORE the
issue-20 redesign (commit 280ce88, whose E2 has no grid/recipe arguments: they are patched
into the module it reads them from). Run once, from a checkout of that commit:

    git worktree add /work/base-exp 280ce88
    PYTHONPATH=/work/base-exp/src python tests/experiments/golden/make_golden.py
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
    import specbound

    print("specbound from", specbound.__file__)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from specbound.experiments.sparse_majority import SparseMajorityConfig, run_study

        run_study(SparseMajorityConfig(**gc.E1_CONFIG), tmp / "e1", plots=False)
        gc.save("e1", gc.normalise(tmp / "e1", ["runs.csv", "trends.csv"]))

        from specbound.experiments import scaling_synthetic as synth
        from specbound.experiments.scaling import ScalingConfig, run_scaling

        synth.QUICK_GRID = gc.E2_GRID
        synth.QUICK_RECIPE = synth.Recipe(**gc.E2_RECIPE)
        run_scaling(ScalingConfig(family="synthetic", quick=True, out=tmp / "e2", seed=gc.E2_SEED))
        gc.save("e2", gc.normalise(tmp / "e2", ["models.csv", "exponents.csv", "norms.csv"]))

        from specbound.experiments.correlation import load_grid, run_sweep

        for name, grid in gc.E3_GRIDS.items():
            path = tmp / f"{name}.json"
            path.write_text(json.dumps(grid))
            run_sweep(load_grid(path), tmp / name, jobs=1, plots=False)
            gc.save(name, gc.normalise(tmp / name, ["models.csv", "scores.csv"]))


if __name__ == "__main__":
    main()
