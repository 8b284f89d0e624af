"""One unit of work of E4: every setting of one sweep for one seed (draws, KLs, densities).

Streams (all from :func:`specbound.experiments.common.run_rng`, so a unit's numbers depend only
on the base seed, the sweep, the seed index and the setting, never on which other units run):
``(seed, sweep, k, 0, i)`` finite width at setting ``i`` (``i = 0`` for the nested H sweep of
fixed width), ``(seed, sweep, k, 1)`` and ``(seed, sweep, k, 2)`` the two independent limit draws
(A: the reference, B: the floor), ``(seed, sweep, k, 3, i)`` the Gaussian factors ``ξ`` that turn
variances into samples for the KDE estimator.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from specbound.experiments.common import run_rng
from specbound.experiments.infinite_width.config import EXPERIMENTS, InfiniteWidthConfig
from specbound.experiments.infinite_width.density import (
    grid_kl,
    kde_kl,
    log_gaussian,
    log_mixture_density,
    mixture_grid,
)
from specbound.experiments.infinite_width.samplers import (
    ModelSpec,
    fast_conditional_variance,
    limit_conditional_variance,
    sigma2_infinity,
    token_sigma,
)

__all__ = ["COLUMNS", "DENSITY_POINTS", "UNIT_VERSION", "compute_unit", "unit_key"]

#: The columns of ``kl.csv``, in order.
COLUMNS = ["experiment", "token_map", "n", "H", "head_width", "seed", "samples", "estimator",
           "kl_to_limit", "kl_to_gaussian", "kl_limit_to_gaussian", "floor", "var_finite", "var_limit",
           "sigma2_inf", "grid_points"]

#: Bump when a unit's numbers would change for the same key (invalidates the cache).
UNIT_VERSION = 1
#: Points of the half-line plotting grid of the stored densities (seed 0 only), in units of σ_∞.
DENSITY_POINTS = np.linspace(0.0, 6.0, 241)


def unit_key(cfg: InfiniteWidthConfig, experiment: str, k: int) -> dict[str, Any]:
    """What a unit's numbers depend on: a cached unit is reused only for an equal key."""
    return {
        "version": UNIT_VERSION, "experiment": experiment, "seed_index": k, "seed": cfg.seed,
        "samples": cfg.samples_for(experiment), "s": cfg.s, "kl": cfg.kl, "grid_du": cfg.grid_du,
        "scores": cfg.scores,
        "settings": [[st.n, st.H, st.head_width] for st in cfg.settings(experiment)],
    }


def _kls(cfg: InfiniteWidthConfig, vf: np.ndarray, va: np.ndarray, vb: np.ndarray, s2: float,
         xi_rng: np.random.Generator) -> dict[str, float]:
    """The four KL numbers of one setting from the three variance draws ``[M]``."""
    if cfg.kl == "mixture":
        grid = mixture_grid(vf, va, vb, s2, du=cfg.grid_du)
        lf, la, lb = (log_mixture_density(grid.y, v) for v in (vf, va, vb))
        lg = log_gaussian(grid.y, s2)
        return {"kl_to_limit": grid_kl(lf, la, grid), "kl_to_gaussian": grid_kl(lf, lg, grid),
                "kl_limit_to_gaussian": grid_kl(la, lg, grid), "floor": grid_kl(lb, la, grid),
                "grid_points": float(len(grid.y))}
    yf, ya, yb = (np.sqrt(v) * xi_rng.standard_normal(v.size) for v in (vf, va, vb))
    lo = min(yf.min(), ya.min(), yb.min())
    hi = max(yf.max(), ya.max(), yb.max())
    x = np.linspace(lo, hi, 500)
    return {"kl_to_limit": kde_kl(yf, ya, x), "kl_to_gaussian": kde_kl(yf, None, x, q_var=s2),
            "kl_limit_to_gaussian": kde_kl(ya, None, x, q_var=s2), "floor": kde_kl(yb, ya, x),
            "grid_points": 500.0}


def _half_density(v: np.ndarray, sd: float) -> list[float]:
    return [float(x) for x in np.exp(log_mixture_density(DENSITY_POINTS * sd, v))]


def compute_unit(cfg: InfiniteWidthConfig, experiment: str, k: int,
                 sigma2: dict[str, float] | None = None) -> dict[str, Any]:
    """Every setting of ``experiment`` for seed index ``k``: ``{"rows": [...], "densities":
    {...} (k == 0 only), "seconds": wall time}``. ``sigma2``: σ²_∞ per token map, computed
    here when not given."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}")
    t0 = time.perf_counter()
    code = EXPERIMENTS.index(experiment)
    tm = cfg.token_map(experiment)
    sigma = token_sigma(tm, cfg.s)
    s2 = (sigma2 or {}).get(tm) or sigma2_infinity(sigma)
    m_draws = cfg.samples_for(experiment)
    settings = cfg.settings(experiment)
    heads = [st.H for st in settings]

    def rng(*keys: int) -> np.random.Generator:
        return run_rng(cfg.seed, code, k, *keys)

    if cfg.nested(experiment):
        h_max = max(heads)
        lim_a = limit_conditional_variance(sigma, h_max, m_draws, rng(1), heads=heads)
        lim_b = limit_conditional_variance(sigma, h_max, m_draws, rng(2), heads=heads)
    else:
        lim_a = np.stack([limit_conditional_variance(sigma, cfg.H_fixed, m_draws, rng(1))] * len(settings))
        lim_b = np.stack([limit_conditional_variance(sigma, cfg.H_fixed, m_draws, rng(2))] * len(settings))
    if experiment == "H_sweep":
        spec = ModelSpec(n=cfg.n_fixed, H=max(heads), token_map=tm, s=cfg.s)
        finite = fast_conditional_variance(spec, m_draws, rng(0, 0), heads=heads, scores=cfg.scores)
    else:
        finite = np.stack([
            fast_conditional_variance(ModelSpec(n=st.n, H=st.H, token_map=tm, s=cfg.s, head_width=st.head_width),
                                      m_draws, rng(0, i), scores=cfg.scores)
            for i, st in enumerate(settings)])
    rows: list[dict[str, Any]] = []
    dens: dict[str, Any] = {}
    for i, st in enumerate(settings):
        vf, va, vb = finite[i], lim_a[i], lim_b[i]
        kl = _kls(cfg, vf, va, vb, s2, rng(3, i))
        grid_points = int(kl.pop("grid_points"))
        rows.append({
            "experiment": experiment, "token_map": tm, "n": st.n, "H": st.H,
            "head_width": st.head_width if st.head_width is not None else st.n,
            "seed": k, "samples": m_draws, "estimator": cfg.kl, **kl,
            "var_finite": float(vf.mean()), "var_limit": float(va.mean()), "sigma2_inf": s2,
            "grid_points": grid_points,
        })
        if k == 0:
            sd = math.sqrt(s2)
            dens[f"{st.n}_{st.H}"] = {"n": st.n, "H": st.H, "finite": _half_density(vf, sd),
                                      "limit": _half_density(va, sd)}
    return {"rows": rows, "densities": dens, "sigma2_inf": s2, "seconds": time.perf_counter() - t0}
