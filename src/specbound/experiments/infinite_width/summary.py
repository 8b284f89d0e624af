"""Tables and headline numbers of E4 from the tidy per-(setting, seed) table ``kl.csv``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from specbound.experiments.stats import fit_slope

__all__ = ["KL_COLUMNS", "headline", "summarise"]

KL_COLUMNS = ("kl_to_limit", "kl_to_gaussian", "kl_limit_to_gaussian", "floor")
KEYS = ["experiment", "token_map", "n", "H", "head_width"]


def summarise(kl: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: number of seeds, and mean, s.d. and standard error over seeds of
    every KL column."""
    g = kl.groupby(KEYS, sort=False)
    out = g.size().rename("n_seeds").to_frame()
    for c in KL_COLUMNS:
        out[f"{c}_mean"] = g[c].mean()
        out[f"{c}_sd"] = g[c].std(ddof=1)
        out[f"{c}_se"] = out[f"{c}_sd"] / np.sqrt(out["n_seeds"])
    out["var_finite_mean"] = g["var_finite"].mean()
    out["sigma2_inf"] = g["sigma2_inf"].first()
    return out.reset_index()


def _paired_lower(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean of ``a − b`` over seeds and the lower end of its two-sided ``level`` t interval
    (NaN with fewer than 2 seeds)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    mean = float(d.mean())
    if d.size < 2:
        return mean, float("nan")
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    from scipy.stats import t as student_t

    return mean, mean - float(student_t.ppf((1 + level) / 2, d.size - 1)) * se


def _slope(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    ok = np.asarray(y, float) > 0
    fit = fit_slope(np.log10(np.asarray(x, float)[ok]), np.log10(np.asarray(y, float)[ok]))
    return {"slope": fit.slope, "ci_low": fit.ci_low, "ci_high": fit.ci_high, "points": fit.n}


def headline(kl: pd.DataFrame) -> dict[str, Any]:
    """The findings in numbers, per sweep present in ``kl``:

    - n sweeps: the slope of log10 KL(finite ‖ limit) on log10 n over all (n, seed) points with a
      95% interval (``-2`` means KL ∝ n⁻²), the same over the points whose setting mean is more
      than 10× the floor, and the mean KL and floor per n;
    - H sweeps: per H, KL(limit ‖ N(0, σ²_∞)) and KL(finite ‖ limit) with the floor, and whether
      KL(limit ‖ N) is resolved above the floor (the 95% lower bound of the paired difference
      over seeds is > 0); the slope of log10 KL(limit ‖ N) on log10 H.
    """
    res: dict[str, Any] = {}
    for exp, d in kl.groupby("experiment", sort=False):
        means = d.groupby(["n", "H"])[list(KL_COLUMNS)].mean().reset_index()
        entry: dict[str, Any] = {"token_map": str(d["token_map"].iloc[0])}
        axis = "n" if exp.endswith("n_sweep") else "H"
        entry["axis"] = axis
        entry["slope_kl_to_limit"] = _slope(d[axis].to_numpy(), d["kl_to_limit"].to_numpy())
        above = means[means["kl_to_limit"] > 10 * means["floor"]][axis]
        da = d[d[axis].isin(above)]
        entry["slope_kl_to_limit_above_floor"] = _slope(da[axis].to_numpy(), da["kl_to_limit"].to_numpy())
        per: list[dict[str, Any]] = []
        for val, g in d.groupby(axis):
            _, lo_lim = _paired_lower(g["kl_limit_to_gaussian"].to_numpy(), g["floor"].to_numpy())
            _, lo_fin = _paired_lower(g["kl_to_limit"].to_numpy(), g["floor"].to_numpy())
            per.append({
                axis: int(val), "seeds": len(g),
                "kl_to_limit": float(g["kl_to_limit"].mean()),
                "kl_to_limit_sd": float(g["kl_to_limit"].std(ddof=1)) if len(g) > 1 else float("nan"),
                "kl_limit_to_gaussian": float(g["kl_limit_to_gaussian"].mean()),
                "kl_limit_to_gaussian_sd": float(g["kl_limit_to_gaussian"].std(ddof=1)) if len(g) > 1 else float("nan"),
                "kl_to_gaussian": float(g["kl_to_gaussian"].mean()),
                "floor": float(g["floor"].mean()),
                "kl_to_limit_resolved": None if math.isnan(lo_fin) else bool(lo_fin > 0),
                "kl_limit_to_gaussian_resolved": None if math.isnan(lo_lim) else bool(lo_lim > 0),
            })
        entry["per_" + axis] = per
        if axis == "H":
            entry["slope_kl_limit_to_gaussian"] = _slope(d["H"].to_numpy(), d["kl_limit_to_gaussian"].to_numpy())
        res[str(exp)] = entry
    return res
