"""Per-matrix measures of ``bounds.md`` §3, from a spectrum.

Every function takes the singular values ``s`` (descending, float64 numpy array; listed values
only — the exact zeros of a factored spectrum contribute nothing to any of these, except
through ``r`` in the rank threshold) and returns a float.

Conventions for the zero matrix (σ_1 = 0): rank 0, stable rank 0, effective rank 0.
"""

from __future__ import annotations

import math

import numpy as np

RANK_RTOL = 1e-10


def spectral_norm(s: np.ndarray) -> float:
    """``C_2(A) = σ_1``."""
    return float(s[0]) if s.size else 0.0


def frobenius(s: np.ndarray) -> float:
    """``(Σ σ_i²)^{1/2}``."""
    return float(np.sqrt(np.sum(s * s)))


def nuclear(s: np.ndarray) -> float:
    """``Σ σ_i``."""
    return float(np.sum(s))


def numerical_rank(s: np.ndarray, r: int) -> int:
    """``S_0(A) = #{σ_i > 1e-10 · r · max(σ_1, 1)}`` with ``r = min(rows, cols)``."""
    if s.size == 0:
        return 0
    return int(np.count_nonzero(s > RANK_RTOL * r * max(float(s[0]), 1.0)))


def log_schatten(s: np.ndarray, p: float) -> float:
    """``ln S_p(A) = ln Σ σ_i^p`` for ``p > 0`` (``-inf`` for the zero matrix), in log space.

    Computed as a log-sum-exp of ``p ln σ_i`` so it neither overflows nor underflows.
    """
    if p <= 0:
        raise ValueError("log_schatten takes p > 0; S_0 is the numerical rank")
    pos = s[s > 0]
    if pos.size == 0:
        return -math.inf
    x = p * np.log(pos)
    m = float(x.max())
    return m + math.log(float(np.exp(x - m).sum()))


def log_schatten_grid(s: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """:func:`log_schatten` for every ``p`` of ``ps`` (all ``> 0``) at once: ``[len(ps)]``."""
    ps = np.asarray(ps, dtype=np.float64)
    if ps.size and float(ps.min()) <= 0:
        raise ValueError("log_schatten_grid takes p > 0; S_0 is the numerical rank")
    pos = s[s > 0]
    if pos.size == 0:
        return np.full(ps.shape, -math.inf)
    x = np.multiply.outer(ps, np.log(pos))  # [P, k]
    m = x.max(axis=1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))


def schatten(s: np.ndarray, p: float, r: int | None = None) -> float:
    """``S_p(A) = Σ σ_i^p`` (p > 0; a quasi-norm power for p < 1); ``S_0`` = numerical rank."""
    if p == 0:
        return float(numerical_rank(s, r if r is not None else s.size))
    return float(np.sum(s[s > 0] ** p))


def stable_rank(s: np.ndarray) -> float:
    """``Σ σ_i² / σ_1²`` (0 for the zero matrix)."""
    if s.size == 0 or s[0] == 0:
        return 0.0
    return float(np.sum((s / s[0]) ** 2))


def effective_rank(s: np.ndarray) -> float:
    """Roy & Vetterli (2007): ``exp(−Σ q_i ln q_i)`` with ``q_i = σ_i / Σ σ_j`` (0 for zero matrix)."""
    total = float(np.sum(s))
    if total <= 0:
        return 0.0
    q = s[s > 0] / total
    return float(math.exp(-float(np.sum(q * np.log(q)))))
