"""Densities and KL divergences of zero-mean scale mixtures of Gaussians, with no kernel.

Both the finite-width output and its limit are ``y = √v ξ`` (see :mod:`.samplers`), so their
densities are ``p(y) = E_v N(y; 0, v)``; given ``M`` draws of ``v`` the estimate
``p̂(y) = M⁻¹ Σ_i N(y; 0, v_i)`` is unbiased at every ``y``, smooth, and needs no bandwidth.
It is computed in log space (log-sum-exp), so far tails neither underflow nor need a 1e-12 floor.

The KL integral ``∫ p log(p/q)`` runs over a grid that resolves every component: the densities are
even, so only ``y ≥ 0`` is used, on ``y = c·sinh(u)`` with ``u`` uniform (spacing ≈ ``c·du`` near 0,
≈ ``y·du`` in the tails), ``c`` below the narrowest component's scale. Both densities are
renormalised on the grid (positive quadrature weights), so the estimate is ≥ 0.

The authors' estimator (Gaussian KDE of samples with Scott's bandwidth on a 500-point grid, a 1e-12
floor, discrete KL) is :func:`kde_kl`, for comparison with their figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Grid",
    "gaussian_kl",
    "grid_kl",
    "kde_kl",
    "kde_log_density",
    "log_gaussian",
    "log_mixture_density",
    "mixture_grid",
]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Grid:
    """Points ``y`` ``[G]`` (``y ≥ 0``) and weights ``w`` ``[G]`` with ``Σ w f(y) ≈ ∫_ℝ f`` for an
    even ``f`` (the factor 2 of the two half-lines is in ``w``)."""

    y: np.ndarray
    w: np.ndarray


def mixture_grid(*variances: np.ndarray | float, du: float = 0.02, tail_sd: float = 12.0) -> Grid:
    """A half-line grid for the mixtures with these component variances: ``c`` is half the
    smallest component's standard deviation (at least 1e-4 of the median's), the end
    ``tail_sd`` standard deviations of the widest."""
    v = np.concatenate([np.atleast_1d(np.asarray(x, dtype=float)).ravel() for x in variances])
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        raise ValueError("no positive finite variance to build a grid from")
    sd_min, sd_med, sd_max = math.sqrt(v.min()), math.sqrt(float(np.median(v))), math.sqrt(v.max())
    c = max(0.5 * sd_min, 1e-4 * sd_med)
    u_max = math.asinh(tail_sd * sd_max / c)
    k = max(8, math.ceil(u_max / du))
    u = np.linspace(0.0, u_max, k + 1)
    y = c * np.sinh(u)
    w = np.full(k + 1, u_max / k)
    w[0] *= 0.5
    w[-1] *= 0.5
    w *= c * np.cosh(u) * 2.0
    return Grid(y=y, w=w)


def log_gaussian(y: np.ndarray, var: float) -> np.ndarray:
    """``log N(y; 0, var)``."""
    return -0.5 * (_LOG_2PI + math.log(var)) - 0.5 * np.asarray(y) ** 2 / var


def log_mixture_density(y: np.ndarray, v: np.ndarray, chunk: int = 4_000_000) -> np.ndarray:
    """``log p̂(y)`` ``[G]`` of the scale mixture ``M⁻¹ Σ_i N(y; 0, v_i)`` (``v`` ``[M]``), by
    log-sum-exp in chunks of about ``chunk`` terms."""
    y = np.asarray(y, dtype=float)
    v = np.asarray(v, dtype=float).ravel()
    if v.size == 0 or not np.all(v > 0):
        raise ValueError("mixture variances must be positive (and at least one)")
    inv = 0.5 / v
    base = -0.5 * (_LOG_2PI + np.log(v))  # [M]
    out = np.empty(y.shape, dtype=float)
    flat = y.ravel()
    res = out.ravel()
    step = max(1, chunk // v.size)
    for a in range(0, flat.size, step):
        yy = flat[a:a + step, None] ** 2
        t = base[None, :] - yy * inv[None, :]
        mx = t.max(axis=1, keepdims=True)
        res[a:a + step] = (mx[:, 0] + np.log(np.exp(t - mx).sum(axis=1))) - math.log(v.size)
    return res.reshape(y.shape)


def grid_kl(logp: np.ndarray, logq: np.ndarray, grid: Grid) -> float:
    """``∫ p log(p/q)`` on ``grid``, both densities (given as logs) renormalised on the grid."""
    lp = logp - math.log(float(np.sum(grid.w * np.exp(logp))))
    lq = logq - math.log(float(np.sum(grid.w * np.exp(logq))))
    return max(0.0, float(np.sum(grid.w * np.exp(lp) * (lp - lq))))


def gaussian_kl(var_p: float, var_q: float) -> float:
    """Closed form ``KL(N(0, var_p) ‖ N(0, var_q))``."""
    r = var_p / var_q
    return 0.5 * (r - 1.0 - math.log(r))


def kde_log_density(samples: np.ndarray, x: np.ndarray, chunk: int = 4_000_000) -> np.ndarray:
    """Log of a Gaussian KDE of ``samples`` ``[M]`` with Scott's bandwidth ``σ̂ M^{-1/5}`` (SciPy's
    ``gaussian_kde`` default in one dimension, unbiased ``σ̂``), at ``x``."""
    s = np.asarray(samples, dtype=float).ravel()
    bw = float(np.std(s, ddof=1)) * s.size ** (-0.2)
    if not bw > 0:
        raise ValueError("KDE of a constant sample")
    return log_mixture_density_shifted(np.asarray(x, dtype=float), s, bw * bw, chunk)


def log_mixture_density_shifted(x: np.ndarray, centres: np.ndarray, var: float, chunk: int) -> np.ndarray:
    """``log M⁻¹ Σ_i N(x; c_i, var)`` ``[len(x)]``."""
    out = np.empty(x.size)
    step = max(1, chunk // centres.size)
    for a in range(0, x.size, step):
        t = -0.5 * (x[a:a + step, None] - centres[None, :]) ** 2 / var
        mx = t.max(axis=1, keepdims=True)
        out[a:a + step] = mx[:, 0] + np.log(np.exp(t - mx).sum(axis=1))
    return out - math.log(centres.size) - 0.5 * (_LOG_2PI + math.log(var))


def kde_kl(p_samples: np.ndarray, q_samples: np.ndarray | None, x: np.ndarray, *,
           q_var: float | None = None, floor: float = 1e-12) -> float:
    """The authors' estimate of ``KL(p ‖ q)``: KDE densities of the samples (or, with
    ``q_var``, the exact ``N(0, q_var)`` for ``q``) on the uniform grid ``x``, plus ``floor``,
    normalised to unit trapezoid area, then the discrete KL ``Σ p̃ log(p̃/q̃)`` of the values
    normalised to sum 1 (what ``scipy.stats.entropy`` computes)."""
    p = np.exp(kde_log_density(p_samples, x)) + floor
    if q_var is not None:
        q = np.exp(log_gaussian(x, q_var)) + floor
    elif q_samples is not None:
        q = np.exp(kde_log_density(q_samples, x)) + floor
    else:
        raise ValueError("give q_samples or q_var")
    p = p / np.trapezoid(p, x)
    q = q / np.trapezoid(q, x)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))
