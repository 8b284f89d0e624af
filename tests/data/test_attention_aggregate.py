"""The bootstrap of bounds.md §8: covers the mean, shrinks with more sequences, a fixed seed
gives identical output, and it is scipy's own bootstrap of the mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from specbound.data.aggregate import aggregate, bootstrap_means


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"source": "text", "sequence": i, "layer": 0, "head": h, "x": rng.gamma(2.0, 1.0) + h, "c": 3.0}
            for i in range(n) for h in range(2)]
    return pd.DataFrame(rows)


def test_interval_covers_the_mean_and_shrinks_with_more_sequences():
    small = aggregate(_frame(15), ["source", "layer", "head"], ["x", "c"], seed=0, n_resamples=300)
    large = aggregate(_frame(160), ["source", "layer", "head"], ["x", "c"], seed=0, n_resamples=300)
    for t in (small, large):
        assert (t["x_ci_low"] < t["x_mean"]).all() and (t["x_mean"] < t["x_ci_high"]).all()
        assert (t["c_ci_low"] == 3.0).all() and (t["c_ci_high"] == 3.0).all() and (t["c_std"] == 0).all()
    w_small = (small["x_ci_high"] - small["x_ci_low"]).to_numpy()
    w_large = (large["x_ci_high"] - large["x_ci_low"]).to_numpy()
    assert (w_large < 0.6 * w_small).all()  # ~ 1/sqrt(n): 0.3 expected
    assert list(small["n_sequences"]) == [15, 15]


def test_fixed_seed_is_reproducible_and_another_seed_differs():
    f = _frame(30)
    a = aggregate(f, ["source", "layer", "head"], ["x"], seed=7, n_resamples=300)
    b = aggregate(f, ["source", "layer", "head"], ["x"], seed=7, n_resamples=300)
    c = aggregate(f, ["source", "layer", "head"], ["x"], seed=8, n_resamples=300)
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["x_ci_low"].to_numpy(), c["x_ci_low"].to_numpy())


def test_equals_scipy_bootstrap_of_each_column():
    from scipy.stats import bootstrap

    x = np.random.default_rng(3).normal(size=(25, 3))
    low, high = bootstrap_means(x, seed=5, n_resamples=400)
    for j in range(3):
        r = bootstrap((x[:, j],), np.mean, n_resamples=400, method="BCa", rng=np.random.default_rng(5))
        assert low[j] == pytest.approx(r.confidence_interval.low, rel=1e-10)
        assert high[j] == pytest.approx(r.confidence_interval.high, rel=1e-10)


def test_one_sequence_and_nan_values():
    f = _frame(1)
    t = aggregate(f, ["source", "layer", "head"], ["x"], seed=0, n_resamples=100)
    assert t["x_std"].isna().all() and t["x_ci_low"].isna().all() and t["x_mean"].notna().all()
    g = _frame(20)
    g.loc[g["sequence"] == 0, "x"] = np.nan  # e.g. the normalised entropy of a one-token sequence
    t = aggregate(g, ["source", "layer", "head"], ["x"], seed=0, n_resamples=100)
    assert t["x_mean"].notna().all() and t["x_ci_low"].notna().all()
