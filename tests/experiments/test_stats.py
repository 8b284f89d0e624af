"""The one slope-with-interval fit of E1 and E2 (experiments/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specbound.experiments.stats import SlopeFit, fit_slope, t_ppf


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389),
                                              (30, 2.0422725), (60, 2.0002978)])
def test_t_quantile_matches_table(df: int, expected: float) -> None:
    assert t_ppf(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert t_ppf(0.025, df) == pytest.approx(-expected, abs=1e-6)


def test_recovers_known_slope_with_the_textbook_interval() -> None:
    g = np.random.default_rng(0)
    x = np.repeat(np.log2([16, 32, 64, 128, 256, 512]), 5)
    y = 0.7 * x + 3 + g.normal(0, 0.2, x.size)
    fit = fit_slope(x, y)
    assert fit.n == 30 and fit.interval == "95% t, df=28"
    assert fit.ci_low < 0.7 < fit.ci_high and fit.contains_zero is False
    assert fit.slope == pytest.approx(0.7, abs=0.06)
    # the interval is slope ± t_{0.975, n-2} · sqrt(SSR / (n-2) / Sxx), the slope and r2 numpy's
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    se = math.sqrt((resid**2).sum() / 28 / ((x - x.mean()) ** 2).sum())
    assert fit.slope == pytest.approx(b, rel=1e-12) and fit.intercept == pytest.approx(a, rel=1e-12)
    assert fit.stderr == pytest.approx(se, rel=1e-12)
    assert fit.ci_high - fit.slope == pytest.approx(2.0484071 * se, rel=1e-7)
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-12)
    assert fit_slope(x, 3 + g.normal(0, 0.2, x.size)).contains_zero is True


def test_interval_coverage() -> None:
    """The 95% interval covers the true slope in about 95% of repeated draws."""
    g = np.random.default_rng(1)
    x = np.repeat(np.arange(4.0), 2)
    hits = 0
    for _ in range(400):
        f = fit_slope(x, -0.3 * x + g.normal(0, 1, x.size))
        hits += f.ci_low <= -0.3 <= f.ci_high
    assert 0.92 <= hits / 400 <= 0.98


def _no_nan(fit: SlopeFit) -> None:
    for v in (fit.slope, fit.intercept, fit.ci_low, fit.ci_high, fit.stderr, fit.r2):
        assert v is None or math.isfinite(v), fit


def test_degenerate_input_gives_none_never_nan() -> None:
    exact = fit_slope([1.0, 2.0, 3.0, np.nan], [2.0, 4.0, 6.0, 1.0])  # NaN pairs dropped
    assert exact.n == 3 and exact.slope == pytest.approx(2.0) and exact.ci_high - exact.ci_low == pytest.approx(0, abs=1e-9)
    two = fit_slope([1.0, 2.0], [3.0, 5.0])
    assert (two.n, two.slope, two.intercept, two.r2) == (2, pytest.approx(2.0), pytest.approx(1.0), pytest.approx(1.0))
    assert two.ci_low is None and two.ci_high is None and two.stderr is None and two.contains_zero is None
    assert two.interval == "not computable: only 2 points (exact line, 0 residual df)"
    const_x = fit_slope([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert const_x.slope is None and const_x.intercept is None and const_x.ci_low is None
    assert const_x.interval == "not computable: every x is equal"
    for pts in ([], [1.0], [np.inf, 1.0]):
        few = fit_slope(pts, [1.0] * len(pts))
        assert few.slope is None and few.contains_zero is None and few.interval.startswith("not computable")
    flat = fit_slope([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert flat.slope == 0.0 and flat.r2 is None and flat.contains_zero is True
    for f in (exact, two, const_x, few, flat):
        _no_nan(f)
    assert two.as_row() == {"n_points": 2, "slope": two.slope, "ci_low": None, "ci_high": None,
                            "interval": two.interval, "r2": two.r2}


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        fit_slope([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        fit_slope([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], level=1.5)
