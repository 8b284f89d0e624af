"""Samplers of one attention layer's output at finite width and in the infinite-width limit.

The model (experiments.md E4, after Sakai, Karakida & Imaizumi 2025): ``s`` tokens
``x^i = ψ(W^i h)`` with ``h ~ N(0, I_n)``, ``W^i`` entries ``N(0, 1/n)``, ``ψ`` the identity
(clipped at ±``clip``) or ReLU; ``H`` heads with ``W_Q, W_K, W_V`` (``n × m``, entries
``N(0, 1/n)``) and ``W_O`` (``m × n``, entries ``N(0, 1/m)``), scores ``Q Kᵀ/√m``, row softmax,
``y = H^{-1/2} Σ_heads softmax(S) V W_O``; recorded: ``y[token 1, coordinate 1]``. Full width:
``m = n``; low-rank variant: ``m = n_H`` (e.g. 64) with ``n = n_H · H``.

Every sampler returns the *conditional variance* ``v`` of the recorded output: given the tokens
``X``, the scores and ``|w_O|`` (the first column of each head's ``W_O``), ``y`` is exactly
``N(0, v)`` with ``v = H⁻¹ Σ_heads |w_O|² aᵀ (XXᵀ/n) a`` (``a`` the head's first softmax row), so
the law of ``y`` is the scale mixture ``E_v N(0, v)``; samples are ``y = √v · ξ``.

- :func:`naive_sample`: explicit weights (``O(H n² s)`` per draw), for validation at small n.
- :func:`fast_conditional_variance`: exact in law at a cost independent of n for the identity map.
  Given ``X`` with Gram ``G = XXᵀ/n = L Lᵀ``, ``X W`` (``W`` with iid ``N(0, 1/n)`` entries) has iid
  columns ``N(0, G)``, i.e. ``X W =_d L A`` with ``A`` iid ``N(0, 1)``. Hence ``Q Kᵀ =_d L A Bᵀ Lᵀ``
  and, given ``A``, the columns of ``A Bᵀ`` are iid ``N(0, A Aᵀ)``: ``A Bᵀ =_d T Ξ`` with ``T`` the
  Bartlett factor of ``A Aᵀ ~ Wishart_s(m, I)`` and ``Ξ`` an ``s × s`` standard Gaussian matrix.
  The value column ``V w_O`` is ``N(0, |w_O|² G)`` given ``w_O``, with ``|w_O|² ~ χ²_m/m``, and is
  independent of the scores. The tokens: ``W^i h = (|h|/√n) g^i`` with ``g^i ~ N(0, I_n)``, so for
  the identity map ``G = (χ²_n/n) · Wishart_s(n, I)/n`` (Bartlett again; the clip at ±100 is an
  event of probability below 1e-2000 and is left out). For ReLU, ``G = (χ²_n/n) Σ_k r_k r_kᵀ / n``
  with ``r_k = ReLU(g_k)`` has no closed-form law and is drawn directly (``O(n s)`` per draw).
- :func:`limit_conditional_variance`: per head scores ``p ~ N(0, Σ ⊗ Σ)`` (drawn as
  ``L_Σ Ξ L_Σᵀ``), values ``Z ~ N(0, Σ)``: ``v = H⁻¹ Σ_heads aᵀ Σ a``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ModelSpec",
    "bartlett_factor",
    "fast_conditional_variance",
    "fast_sample",
    "limit_conditional_variance",
    "limit_sample",
    "limit_scores",
    "naive_sample",
    "sigma2_infinity",
    "softmax",
    "token_sigma",
]

TOKEN_MAPS = ("identity", "relu")


@dataclass(frozen=True)
class ModelSpec:
    """One finite-width attention layer: ``s`` tokens, width ``n``, ``H`` heads, head width
    ``head_width`` (``None``: full width ``m = n``), token map ``identity`` or ``relu``."""

    n: int
    H: int
    token_map: str = "identity"
    s: int = 4
    head_width: int | None = None
    clip: float = 100.0

    @property
    def m(self) -> int:
        """The head width: the inner dimension of the scores and of ``W_O``."""
        return self.n if self.head_width is None else self.head_width

    def validate(self) -> None:
        if self.token_map not in TOKEN_MAPS:
            raise ValueError(f"token map {self.token_map!r}: use identity or relu")
        if self.s < 2:
            raise ValueError(f"s = {self.s}: need at least 2 tokens")
        if self.H < 1:
            raise ValueError(f"H = {self.H}: need at least one head")
        if self.n < self.s or self.m < self.s:
            raise ValueError(f"n = {self.n}, head width {self.m}: both must be at least s = {self.s}")
        if not self.clip > 0:
            raise ValueError(f"clip = {self.clip}: must be positive")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def bartlett_factor(dof: int, s: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Lower-triangular ``T`` ``[size, s, s]`` with ``T Tᵀ ~ Wishart_s(dof, I)`` (Bartlett):
    ``T_ii = √χ²_{dof−i}`` (``i = 0..s−1``), ``T_ij ~ N(0, 1)`` below the diagonal. ``dof ≥ s``."""
    if dof < s:
        raise ValueError(f"Wishart degrees of freedom {dof} < dimension {s}")
    t = np.zeros((size, s, s))
    il = np.tril_indices(s, -1)
    t[:, il[0], il[1]] = rng.standard_normal((size, len(il[0])))
    diag = np.sqrt(rng.chisquare(dof - np.arange(s), size=(size, s)))
    idx = np.arange(s)
    t[:, idx, idx] = diag
    return t


def token_sigma(token_map: str, s: int = 4) -> np.ndarray:
    """``Σ = lim XXᵀ/n`` ``[s, s]``: ``I_s`` for the identity map; ReLU: 1/2 on the diagonal,
    ``1/(2π)`` off it."""
    if token_map == "identity":
        return np.eye(s)
    if token_map == "relu":
        return np.full((s, s), 1.0 / (2.0 * math.pi)) + (0.5 - 1.0 / (2.0 * math.pi)) * np.eye(s)
    raise ValueError(f"token map {token_map!r}: use identity or relu")


def _psd_factor(g: np.ndarray) -> np.ndarray:
    """``L`` with ``L Lᵀ = g`` for a batch ``[size, s, s]`` of PSD matrices: Cholesky, or, when
    some matrix is singular (ReLU tokens at small n), ``U Λ^{1/2}`` from ``eigh`` for the batch
    (any factor gives the same law of ``L A``)."""
    try:
        return np.linalg.cholesky(g)
    except np.linalg.LinAlgError:
        w, u = np.linalg.eigh(g)
        return u * np.sqrt(np.clip(w, 0.0, None))[:, None, :]


def _token_gram(spec: ModelSpec, size: int, rng: np.random.Generator,
                chunk_floats: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """``(G, L)``: the token Gram ``XXᵀ/n`` ``[size, s, s]`` and a factor ``L Lᵀ = G``."""
    n, s = spec.n, spec.s
    r = rng.chisquare(n, size=size) / n  # |h|²/n
    if spec.token_map == "identity":
        d = bartlett_factor(n, s, size, rng)  # g gᵀ = D Dᵀ
        low = np.sqrt(r / n)[:, None, None] * d
        return low @ np.swapaxes(low, 1, 2), low
    g = np.empty((size, s, s))
    step = max(1, chunk_floats // (n * s))
    for a in range(0, size, step):
        b = min(size, a + step)
        x = np.maximum(rng.standard_normal((b - a, s, n)), 0.0)
        g[a:b] = x @ np.swapaxes(x, 1, 2)
    g *= (r / n)[:, None, None]
    return g, _psd_factor(g)


def _snapshots(heads: Sequence[int] | None, H: int) -> tuple[list[int], bool]:
    """The head counts at which to record ``v`` (sorted, unique) and whether one was asked for."""
    if heads is None:
        return [H], False
    hs = sorted({int(h) for h in heads})
    if not hs or hs[0] < 1:
        raise ValueError(f"heads {list(heads)}: need positive head counts")
    return hs, True


def _head_chunks(total: int, size: int, s: int, floats: int = 2_000_000) -> Iterator[int]:
    step = max(1, floats // max(1, size * s))
    done = 0
    while done < total:
        k = min(step, total - done)
        yield k
        done += k


def fast_conditional_variance(spec: ModelSpec, size: int, rng: np.random.Generator, *,
                              heads: Sequence[int] | None = None, scores: str = "row") -> np.ndarray:
    """Draws of the conditional variance ``v`` of ``y[1, 1]`` at finite width, exact in law (see
    the module docstring), without any ``n × n`` matrix.

    ``heads=None``: ``[size]`` with ``spec.H`` heads. ``heads=(1, 2, 4, …)``: ``[len(heads), size]``,
    row ``i`` the average over the *first* ``heads[i]`` heads of the same draws (nested: every row is
    exact in law; rows share heads). ``scores="bartlett"`` draws each head's full ``s × s`` score
    matrix ``L T Ξ Lᵀ/√m``; ``"row"`` (default, same law, 3× cheaper) only the recorded first row:
    ``uᵀ Ξ =_d |u| ξ`` for ``u = Tᵀ l_1`` independent of ``Ξ``, and ``|u|² = l_1ᵀ T Tᵀ l_1 ~
    G_11 χ²_m`` (a fixed direction of a Wishart matrix), so the row is ``√(G_11 χ²_m/m) · L ξ``.
    """
    spec.validate()
    if scores not in ("row", "bartlett"):
        raise ValueError(f"scores {scores!r}: use row or bartlett")
    s, m = spec.s, spec.m
    snaps, many = _snapshots(heads, spec.H)
    g, low = _token_gram(spec, size, rng)
    lt = np.swapaxes(low, 1, 2)  # [size, s, s]
    g11 = g[:, 0, 0]
    out = np.empty((len(snaps), size))
    acc = np.zeros(size)
    done = 0
    for k in _head_chunks(snaps[-1], size, s * (s if scores == "bartlett" else 1)):
        if scores == "row":
            z = rng.standard_normal((size, k, s))
            c = rng.chisquare(m, size=(size, k))
            row = np.sqrt(g11[:, None] * c / m)[:, :, None] * (z @ lt)  # [size, k, s]
        else:
            t = bartlett_factor(m, s, size * k, rng).reshape(size, k, s, s)
            xi = rng.standard_normal((size, k, s, s))
            u = np.einsum("bi,bhij->bhj", low[:, 0, :], t)
            u = np.einsum("bhi,bhij->bhj", u, xi)
            row = (u @ lt) / math.sqrt(m)
        a = softmax(row)
        w2 = rng.chisquare(m, size=(size, k)) / m  # |w_O|^2
        terms = w2 * np.sum((a @ g) * a, axis=-1)  # [size, k]
        acc, done = _accumulate(terms, snaps, out, acc, done)
    return out if many else out[0]


def _accumulate(terms: np.ndarray, snaps: Sequence[int], out: np.ndarray, acc: np.ndarray, done: int
                ) -> tuple[np.ndarray, int]:
    """Add a chunk of per-head terms ``[size, k]`` (heads ``done + 1 … done + k``) to the running
    sums ``acc`` and write ``out[i] = (Σ of the first h terms) / h`` for every snapshot ``h`` of
    ``snaps`` inside the chunk; returns the new ``(acc, done)``."""
    k = terms.shape[1]
    csum = np.cumsum(terms, axis=1) + acc[:, None]
    for i, h in enumerate(snaps):
        if done < h <= done + k:
            out[i] = csum[:, h - done - 1] / h
    return csum[:, -1], done + k


def fast_sample(spec: ModelSpec, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(y, v)`` ``[size]`` each: recorded outputs ``y = √v ξ`` and their conditional variances."""
    v = fast_conditional_variance(spec, size, rng)
    return np.sqrt(v) * rng.standard_normal(size), v


def limit_scores(sigma: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` score matrices ``[size, s, s]`` with ``vec(p) ~ N(0, Σ ⊗ Σ)``: ``p = L Ξ Lᵀ``,
    ``L Lᵀ = Σ`` (``Cov(p_ij, p_kl) = Σ_ik Σ_jl``)."""
    low = np.linalg.cholesky(np.asarray(sigma, dtype=float))
    xi = rng.standard_normal((size, *low.shape))
    return low @ xi @ low.T


def limit_conditional_variance(sigma: np.ndarray, H: int, size: int, rng: np.random.Generator, *,
                               heads: Sequence[int] | None = None) -> np.ndarray:
    """Draws of ``v = H⁻¹ Σ_heads aᵀ Σ a``, ``a = softmax(p_1)``: the conditional variance of the
    limit's ``y_1`` given every head's scores. The first row of ``p ~ N(0, Σ ⊗ Σ)`` is
    ``N(0, Σ_11 Σ)``, drawn as ``√Σ_11 · L ξ``. ``heads``: as :func:`fast_conditional_variance`."""
    sigma = np.asarray(sigma, dtype=float)
    if H < 1:
        raise ValueError(f"H = {H}: need at least one head")
    s = len(sigma)
    low = np.linalg.cholesky(sigma)
    snaps, many = _snapshots(heads, H)
    out = np.empty((len(snaps), size))
    acc = np.zeros(size)
    done = 0
    scale = math.sqrt(sigma[0, 0])
    for k in _head_chunks(snaps[-1], size, s):
        a = softmax(rng.standard_normal((size, k, s)) @ (scale * low.T))
        terms = np.sum((a @ sigma) * a, axis=-1)
        acc, done = _accumulate(terms, snaps, out, acc, done)
    return out if many else out[0]


def limit_sample(sigma: np.ndarray, H: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(y, v)`` ``[size]`` each from the limit, with explicit values ``Z ~ N(0, Σ)`` per head
    (the literal hierarchical construction; :func:`limit_conditional_variance` integrates Z out)."""
    sigma = np.asarray(sigma, dtype=float)
    low = np.linalg.cholesky(sigma)
    y = np.zeros(size)
    v = np.zeros(size)
    for _ in range(H):
        a = softmax(limit_scores(sigma, size, rng)[:, 0, :])
        z = rng.standard_normal((size, len(sigma))) @ low.T
        y += np.einsum("bi,bi->b", a, z)
        v += np.einsum("bi,ij,bj->b", a, sigma, a)
    return y / math.sqrt(H), v / H


def sigma2_infinity(sigma: np.ndarray, order: int = 16) -> float:
    """``σ²_∞ = E[aᵀ Σ a]``, ``a = softmax(p_1)``, ``p_1 ~ N(0, Σ_11 Σ)``: the variance of the
    H → ∞ Gaussian (``s E[softmax_1(p)²]`` for ``Σ = I``), by tensor Gauss–Hermite quadrature
    with ``order`` nodes per dimension (``order**s`` points)."""
    sigma = np.asarray(sigma, dtype=float)
    s = len(sigma)
    x, w = np.polynomial.hermite_e.hermegauss(order)
    w = w / math.sqrt(2.0 * math.pi)
    grids = np.meshgrid(*([x] * s), indexing="ij")
    z = np.stack([g.ravel() for g in grids], axis=1)
    wt = np.ones(z.shape[0])
    for k, g in enumerate(np.meshgrid(*([w] * s), indexing="ij")):
        wt *= g.ravel()
    p = math.sqrt(sigma[0, 0]) * z @ np.linalg.cholesky(sigma).T
    a = softmax(p)
    return float(np.sum(wt * np.einsum("bi,ij,bj->b", a, sigma, a)))


def naive_sample(spec: ModelSpec, size: int, rng: np.random.Generator,
                 chunk_floats: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """``(y, v)`` ``[size]`` each by the literal construction with explicit weights: ``W^i``
    (``n × n``), ``W_Q, W_K, W_V`` (``n × m``), ``W_O`` (``m × n``) per head; ``y`` is the computed
    output ``y[1, 1]``, ``v`` its conditional variance computed from the same weights."""
    spec.validate()
    n, m, s, H = spec.n, spec.m, spec.s, spec.H
    per = s * n * n + 3 * n * m + m * n
    step = max(1, chunk_floats // per)
    ys, vs = np.empty(size), np.empty(size)
    for a0 in range(0, size, step):
        b = min(size, a0 + step) - a0
        h = rng.standard_normal((b, n))
        w_tok = rng.standard_normal((b, s, n, n)) / math.sqrt(n)
        x = (w_tok @ h[:, None, :, None])[..., 0]
        x = np.clip(x, -spec.clip, spec.clip) if spec.token_map == "identity" else np.maximum(x, 0.0)
        gram = x @ np.swapaxes(x, 1, 2) / n
        y = np.zeros(b)
        v = np.zeros(b)
        for _ in range(H):
            wq, wk, wv = (rng.standard_normal((b, n, m)) / math.sqrt(n) for _ in range(3))
            wo = rng.standard_normal((b, m, n)) / math.sqrt(m)
            q, k, val = x @ wq, x @ wk, x @ wv
            att = softmax(q @ np.swapaxes(k, 1, 2) / math.sqrt(m))
            out = att @ (val @ wo)  # [b, s, n]
            y += out[:, 0, 0]
            a = att[:, 0, :]
            v += np.sum(wo[:, :, 0] ** 2, axis=1) * np.einsum("bi,bij,bj->b", a, gram, a)
        ys[a0:a0 + b] = y / math.sqrt(H)
        vs[a0:a0 + b] = v / H
    return ys, vs
