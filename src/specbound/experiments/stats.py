"""The one slope-with-interval fit of the experiments (E1 trends against log2 T, E2 growth
exponents), on :func:`scipy.stats.t` for the Student-t quantile.

:func:`fit_slope` is ordinary least squares ``y ≈ intercept + slope · x`` with a two-sided
``level`` t interval for the slope (``n − 2`` degrees of freedom). Its behaviour on
degenerate input is fixed and documented on :class:`SlopeFit`: a quantity that cannot be
computed is ``None`` (written as an empty cell in a CSV), never NaN or ±inf, and nothing
raises except mismatched lengths.

The closed form (``slope = Σ(x − x̄)(y − ȳ) / Σ(x − x̄)²``, ``se = sqrt(SSR / (n − 2) / Sxx)``)
is written out rather than taken from :func:`scipy.stats.linregress`: linregress forms the
slope from a covariance matrix (other rounding, so a constant quantity can get a slope of
1e-17 instead of 0), and it raises on constant ``x`` where this helper reports why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SlopeFit", "fit_slope", "t_ppf"]


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (:func:`scipy.stats.t.ppf`)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


@dataclass(frozen=True)
class SlopeFit:
    """Least-squares line ``y = intercept + slope · x`` with a ``level`` t interval for the slope.

    ``n`` counts the pairs used (pairs with a non-finite value are dropped first). Degenerate
    input, in order:

    * fewer than 2 pairs, or every ``x`` equal: ``slope``, ``intercept``, ``ci_low``,
      ``ci_high``, ``stderr`` and ``r2`` are ``None``;
    * exactly 2 pairs: the line is exact (0 residual degrees of freedom): ``slope``,
      ``intercept`` and ``r2`` are set, ``ci_low``/``ci_high``/``stderr`` are ``None``;
    * ``r2`` is ``None`` when every ``y`` is equal (no variance to explain).

    ``interval`` says in words which case applied (``"95% t, df=4"`` when the interval exists);
    ``contains_zero`` is ``None`` when there is no interval.
    """

    n: int
    slope: float | None
    intercept: float | None
    ci_low: float | None
    ci_high: float | None
    stderr: float | None
    r2: float | None
    level: float
    interval: str

    @property
    def contains_zero(self) -> bool | None:
        """Whether the interval contains 0 (``None`` without an interval)."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return bool(self.ci_low <= 0.0 <= self.ci_high)

    def as_row(self) -> dict[str, Any]:
        """The columns of E2's ``exponents.csv``."""
        return {"n_points": self.n, "slope": self.slope, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "interval": self.interval, "r2": self.r2}


def fit_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, level: float = 0.95) -> SlopeFit:
    """OLS slope of ``y`` on ``x`` (both shape ``[n]``) with a ``level`` t interval
    ``slope ± t_{(1+level)/2, n−2} · se``; see :class:`SlopeFit` for degenerate input.

    Raises ``ValueError`` only when ``x`` and ``y`` differ in length or ``level`` is not in (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length ({xa.size} vs {ya.size})")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = int(xa.size)
    if n < 2:
        return SlopeFit(n, None, None, None, None, None, None, level, f"not computable: {n} point(s)")
    xm, ym = xa.mean(), ya.mean()
    sxx = float(((xa - xm) ** 2).sum())
    if sxx == 0.0:
        return SlopeFit(n, None, None, None, None, None, None, level, "not computable: every x is equal")
    slope = float(((xa - xm) * (ya - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = ya - (intercept + slope * xa)
    ssr = float((resid**2).sum())
    sst = float(((ya - ym) ** 2).sum())
    r2 = 1.0 - ssr / sst if sst > 0 else None
    if n == 2:
        return SlopeFit(n, slope, intercept, None, None, None, r2, level,
                        "not computable: only 2 points (exact line, 0 residual df)")
    df = n - 2
    se = math.sqrt(ssr / df / sxx)
    q = t_ppf(0.5 + level / 2.0, df)
    return SlopeFit(n, slope, intercept, slope - q * se, slope + q * se, se, r2, level,
                    f"{round(100 * level)}% t, df={df}")
