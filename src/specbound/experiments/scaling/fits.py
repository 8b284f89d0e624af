"""Growth exponents of E2: the slope of log10(proxy) against log10 N at fixed L and against
L at fixed N (:func:`specbound.experiments.stats.fit_slope`, 95 % t intervals), and one pooled
fit ``log10 proxy = c + a·log10 N + b·L`` over the whole grid.

**What the intervals measure.** Every grid point is one checkpoint (one trained model, no
replicates), so an interval here is the OLS interval of the slope given the residuals around
a straight line in log-log (or log-linear) coordinates: it measures **lack of fit** (how far
the growth is from a pure power law over the grid), not sampling error over training runs or
seeds. ``exponents.csv`` says so in its ``interval_measures`` column (:data:`INTERVAL_MEANING`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from specbound.experiments.stats import fit_slope, t_ppf


#: The ``interval_measures`` cell of every row of ``exponents.csv``.
INTERVAL_MEANING = ("lack of fit: OLS interval over single checkpoints (one model per grid point, no replicates), "
                    "not sampling error")


def fit_exponents(models: pd.DataFrame, families: list[str]) -> pd.DataFrame:
    """Growth exponents of every bound family over the grid in ``models``.

    ``models`` has columns ``L``, ``N`` and ``log10_<family>``. For each family: the slope of
    log10(proxy) against log10(N) at each L (the exponent a in proxy ∝ N^a), and against L at
    each N (decades per layer), wherever at least two grid points share the fixed value; plus
    one pooled fit log10 proxy = c + a·log10 N + b·L over the whole grid (rows ``fixed=all``).
    Every row's ``interval_measures`` says what its interval measures (module docstring).
    """
    rows: list[dict[str, Any]] = []
    for fam in families:
        col = f"log10_{fam}"
        if col not in models:
            continue
        d = models[["L", "N", col]].dropna()
        for fixed, against in (("L", "N"), ("N", "L")):
            for val, g in d.groupby(fixed):
                g = g.sort_values(against)
                if g[against].nunique() < 2:
                    continue
                x = np.log10(g[against].to_numpy(float)) if against == "N" else g[against].to_numpy(float)
                fit = fit_slope(x, g[col].to_numpy(float))
                rows.append(
                    {
                        "family": fam,
                        "x": "log10_N" if against == "N" else "L",
                        "fixed": fixed,
                        "fixed_value": int(val),
                        "x_values": ";".join(str(int(v)) for v in g[against]),
                        **fit.as_row(),
                    }
                )
        rows.extend(_pooled_rows(fam, d, col))
    cols = ["family", "x", "fixed", "fixed_value", "x_values", "n_points", "slope", "ci_low", "ci_high", "interval",
            "interval_measures", "r2"]
    for r in rows:
        r["interval_measures"] = INTERVAL_MEANING
    df = pd.DataFrame(rows, columns=cols)
    df["fixed_value"] = pd.array(df["fixed_value"].tolist(), dtype="Int64")
    return df


def _pooled_rows(fam: str, d: pd.DataFrame, col: str) -> list[dict[str, Any]]:
    if d["L"].nunique() < 2 or d["N"].nunique() < 2:
        return []
    X = np.column_stack([np.ones(len(d)), np.log10(d["N"].to_numpy(float)), d["L"].to_numpy(float)])
    y = d[col].to_numpy(float)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    df = len(d) - 3
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / sst if sst > 0 else None
    out = []
    for j, name in ((1, "log10_N"), (2, "L")):
        if df > 0:
            cov = float((resid**2).sum()) / df * np.linalg.inv(X.T @ X)
            half = t_ppf(0.975, df) * math.sqrt(max(cov[j, j], 0.0))
            lo, hi, note = coef[j] - half, coef[j] + half, f"95% t, df={df}"
        else:
            lo, hi, note = None, None, f"not computable: only {len(d)} points for 3 coefficients"
        out.append(
            {
                "family": fam,
                "x": name,
                "fixed": "all",
                "fixed_value": None,
                "x_values": f"{len(d)} grid points (pooled: log10 proxy ~ log10 N + L)",
                "n_points": len(d),
                "slope": float(coef[j]),
                "ci_low": lo,
                "ci_high": hi,
                "interval": note,
                "r2": r2,
            }
        )
    return out
