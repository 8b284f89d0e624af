"""Approximate spectra for giant feed-forward matrices (``--approx``; off by default).

The exact feed-forward spectrum costs a Gram product and an ``n × n`` eigendecomposition,
``O(n²·m + n³)`` for an ``n × m`` matrix (``n ≤ m``). Approximate mode works matrix-free on the
Gram operator ``G = M Mᵀ`` (or ``Mᵀ M``, the smaller side; ``σ_i² = λ_i(G)``), touching ``M`` only
through products ``G X = M (Mᵀ X)`` with blocks of vectors:

1. **Deflation / spectral norm.** Randomised block Krylov (block ``b``, ``q`` steps, full
   reorthogonalisation) and Rayleigh–Ritz give Ritz pairs ``(θ_i, u_i)`` with residuals
   ``ρ_i = ‖G u_i − θ_i u_i‖``. ``θ_1 ≤ λ_1`` and ``λ_1 − θ_1 ≤ ρ_1`` (``≤ ρ_1²/gap`` when
   ``θ_1`` is separated from ``θ_2`` by more than ``ρ_1``; the gap is divided by a safety
   factor 10 because ``λ_2`` may lie above ``θ_2``), so ``σ_1 ≈ sqrt(θ_1)`` with error
   estimate ``sqrt(θ_1 + δ) − sqrt(θ_1)``, ``δ`` that bound. Ritz pairs with
   ``ρ_i ≤ tol·θ_1`` are *deflated*: their eigenvalues are taken as computed.
2. **Schatten sums by stochastic Lanczos quadrature** on the rest: ``P`` Rademacher probes,
   projected off the deflated vectors, each run ``k`` Lanczos steps (full reorthogonalisation)
   on the projected operator; the Gauss quadrature of probe ``z`` gives
   ``zᵀ f(G) z ≈ ‖z‖² Σ_j τ_j² f(θ_j)``, and ``tr f(G) ≈ Σ_defl f(θ_i) + mean_z(...)``
   with ``f(λ) = λ^{p/2}`` for ``S_p = Σ σ^p``.

The probe average uses a control variate: the probes' quadratures of ``f(λ) = λ`` estimate
``tr(G) − Σ_defl θ_i``, which is known exactly (``‖M‖_F²``), and regressing on them removes most of
the Hutchinson variance (all of it for ``S_2``).

**Error estimate** of a Schatten sum (:meth:`ApproxSpectrum.schatten`):
``2.5 · (standard error over probes)`` + ``|quadrature with k − 1 steps − with k steps|`` +
``Σ_defl |f(θ_i + ρ_i) − f(θ_i)|`` + the discretisation error of the synthetic spectrum below.
When the matrix has low rank the deflation captures its whole range, every probe gives zero and
the estimate is exact with a (near-)zero error estimate.

**Synthetic spectrum.** The bounds need σ values, so :class:`ApproxSpectrum` lists ``r`` values:
the deflated ones and, for the rest, the quantiles of the quadrature measure (the Ritz values of
all probes with their weights; positive atoms interpolated linearly, the weight of atoms below
the noise level ``10·n·ε·λ_1`` taken as exact zeros), rescaled so that ``Σ σ²`` is exact, capped
at the estimated ``σ_1``. Every measure and bound is computed from
these values, and the error columns include the difference between their Schatten sums and the
quadrature estimate.

QK/OV are never approximated: their exact cores (``d_h × d_h``) cost less than one Lanczos
run. Below :attr:`ApproxOptions.min_dim` the exact route is cheaper too and is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from specbound.spectra.kernels import column_norms_21, ff_singular_values
from specbound.spectra.spectrum import ERROR_COLUMNS, MatrixSpectrum

#: z-factor on the probe standard error in the error estimate (≈ 99% under normality).
Z_FACTOR = 2.5
#: The Kato–Temple gap for σ_1 is taken as (θ_1 − θ_2 − ρ_2) / GAP_SAFETY (θ_2 ≤ λ_2 unknown).
GAP_SAFETY = 10.0


@dataclass(frozen=True)
class ApproxOptions:
    """Settings of approximate mode (part of the cache key).

    ``block``·(``block_steps`` + 1) Krylov vectors for deflation and σ_1; ``probes`` × ``steps``
    Lanczos vectors for the quadrature; ``tol``: relative residual under which a Ritz pair is
    deflated; ``seed``: the probes are reproducible; ``min_dim``: matrices whose smaller side is
    below this are done exactly.
    """

    block: int = 8
    block_steps: int = 6
    probes: int = 16
    steps: int = 40
    tol: float = 1e-6
    seed: int = 0
    min_dim: int = 512

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("block", "block_steps", "probes", "steps", "tol", "seed", "min_dim")}


@dataclass
class ApproxSpectrum(MatrixSpectrum):
    """A :class:`MatrixSpectrum` estimated matrix-free (``method`` = ``"slq"``).

    ``values``: the synthetic spectrum (``r`` values, descending; see the module docstring).
    ``sigma1_err``: error estimate of ``σ_1``. Quadrature data (Gram eigenvalue domain):
    ``top`` ``[m]`` deflated eigenvalues with residuals ``top_res`` ``[m]``; ``nodes``/``wts``
    ``[P, k]`` Ritz values and weights of each probe (``Σ_j wts[z, j] f(nodes[z, j])`` is probe
    ``z``'s estimate of the remaining trace divided by ``P``), ``nodes_prev``/``wts_prev``
    the same with ``k − 1`` steps; ``zero_tol``: eigenvalues below it count as zero.
    """

    sigma1_err: float = 0.0
    top: torch.Tensor | None = None
    top_res: torch.Tensor | None = None
    nodes: torch.Tensor | None = None
    wts: torch.Tensor | None = None
    nodes_prev: torch.Tensor | None = None
    wts_prev: torch.Tensor | None = None
    zero_tol: float = 0.0
    #: ``tr(G) − Σ top`` = ``‖M‖_F² − Σ θ_defl`` (exact): the control variate's mean
    trace_rest: float = 0.0

    approximate: ClassVar[bool] = True

    def gram_trace(self, f: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
        """``(estimate, error estimate)`` of ``tr f(G) = Σ_i f(σ_i²)`` (``f(0) = 0``)."""
        def fz(x: torch.Tensor) -> torch.Tensor:
            x = x.double().clamp_min(0)
            return torch.where(x > self.zero_tol, f(x), torch.zeros_like(x))

        top = self.top.double()
        top_val = float(fz(top).sum())
        top_err = float((fz(top + self.top_res.double()) - fz(top)).abs().sum())
        est, stderr = self._control_variate(fz, self.nodes, self.wts)
        prev, _ = self._control_variate(fz, self.nodes_prev, self.wts_prev)
        total = top_val + est
        rounding = 10 * (self.top.numel() + self.nodes.numel()) * torch.finfo(torch.float64).eps * abs(total)
        return total, top_err + Z_FACTOR * stderr + abs(prev - est) + rounding

    def _control_variate(self, fz, nodes: torch.Tensor, wts: torch.Tensor) -> tuple[float, float]:
        """Mean over probes of the quadrature of ``f`` with the linear control variate.

        The probes' quadratures of ``f(λ) = λ`` estimate the remaining trace ``tr(G) − Σ θ_defl``,
        known exactly (``‖M‖_F²`` minus the deflated eigenvalues); their correlation with the
        quadratures of ``f`` removes most of the Hutchinson variance (all of it for ``S_2``).
        Returns ``(estimate, standard error)``.
        """
        P = nodes.shape[0]
        pf = (wts.double() * fz(nodes)).sum(-1) * P  # [P] per-probe estimates
        pl = (wts.double() * nodes.double().clamp_min(0)).sum(-1) * P
        var_l = float(pl.var(unbiased=True)) if P > 1 else 0.0
        beta = float(((pf - pf.mean()) * (pl - pl.mean())).sum() / (P - 1)) / var_l if var_l > 0 else 0.0
        resid = pf - beta * pl
        est = float(resid.mean()) + beta * self.trace_rest
        if P <= 2:
            return est, abs(est)
        # standard error of the mean, one degree of freedom spent on beta
        stderr = float(resid.std(unbiased=True)) * math.sqrt((P - 1) / (P - 2)) / math.sqrt(P)
        return est, stderr

    def schatten(self, p: float) -> tuple[float, float]:
        """``(S_p of the listed values, error estimate)`` for ``p > 0``.

        The error estimate covers the quadrature (:meth:`gram_trace`) and the distance between
        the quadrature estimate and the synthetic values the bounds use.
        """
        est, err = self.gram_trace(lambda lam: lam ** (p / 2))
        s = self.values.double()
        synth = float((s[s > 0] ** p).sum())
        return synth, err + abs(synth - est)

    def payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON metadata for the cache."""
        t = {k: getattr(self, k).detach().double().cpu().contiguous()
             for k in ("top", "top_res", "nodes", "wts", "nodes_prev", "wts_prev")}
        return t, {"sigma1_err": self.sigma1_err, "zero_tol": self.zero_tol, "trace_rest": self.trace_rest}

    def error_row(self, p_star: float) -> dict[str, float]:
        """The :data:`~specbound.spectra.spectrum.ERROR_COLUMNS` of this estimate.

        ``log10_term_err`` propagates the error of ``S_{p*}`` through ``T ∝ S_p^{1/(p+2)}``
        (0 at p* = 0, where T depends on the rank only).
        """
        s2, e2 = self.schatten(2.0)
        fro = math.sqrt(s2)
        s1, e1 = self.schatten(1.0)
        p = float(p_star)
        lt = 0.0
        if p > 0:
            sp, ep = self.schatten(p)
            if sp > 0:
                up = math.log10((sp + ep) / sp)
                down = math.log10(sp / (sp - ep)) if ep < sp else up
                lt = max(up, down) / (p + 2)
        return dict(zip(ERROR_COLUMNS, (self.sigma1_err, math.sqrt(s2 + e2) - fro, e1, lt)))

    @classmethod
    def from_payload(cls, values: torch.Tensor, rows: int, cols: int, norm_21: float, method: str,
                     tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "ApproxSpectrum":
        for k in ("top", "top_res", "nodes", "wts", "nodes_prev", "wts_prev"):
            if k not in tensors or not torch.isfinite(tensors[k]).all():
                raise ValueError(k)
        return cls(values, rows, cols, norm_21, method, sigma1_err=float(meta["sigma1_err"]),
                   zero_tol=float(meta["zero_tol"]), trace_rest=float(meta["trace_rest"]), **{k: tensors[k] for k in
                   ("top", "top_res", "nodes", "wts", "nodes_prev", "wts_prev")})


def _orth_against(W: torch.Tensor, Q: torch.Tensor | None) -> torch.Tensor:
    if Q is None or Q.shape[1] == 0:
        return W
    for _ in range(2):
        W = W - Q @ (Q.mT @ W)
    return W


def _block_krylov(apply, n: int, b: int, q: int, gen: torch.Generator, like: torch.Tensor):
    """Orthonormal basis ``Q`` ``[n, b(q+1)]`` of the block Krylov space and ``G Q``."""
    X = torch.randn(n, b, generator=gen, device=like.device, dtype=like.dtype)
    blocks = [torch.linalg.qr(X).Q]
    gblocks = []
    for i in range(q + 1):
        GX = apply(blocks[-1])
        gblocks.append(GX)
        if i == q:
            break
        Qall = torch.cat(blocks, 1)
        W = torch.linalg.qr(_orth_against(GX, Qall)).Q
        W = torch.linalg.qr(_orth_against(W, Qall)).Q  # reorthogonalise after normalising noise
        blocks.append(W)
    return torch.cat(blocks, 1), torch.cat(gblocks, 1)


def _lanczos(apply, V0: torch.Tensor, k: int, U: torch.Tensor, tol_b: float):
    """``P`` simultaneous Lanczos runs (columns of ``V0``) on ``(I − UUᵀ) G (I − UUᵀ)``.

    Returns ``alpha`` ``[k, P]`` and ``beta`` ``[k, P]`` (the last row is the residual
    coupling β_k, used for Ritz residuals ``β_k |y_k|``); a run whose ``β`` falls below
    ``tol_b`` has found an invariant subspace and continues with zeros (weight-free nodes).
    """
    n, P = V0.shape
    Qs = V0.new_zeros(k, n, P)
    alpha = V0.new_zeros(k, P)
    beta = V0.new_zeros(k, P)
    q, q_prev, b_prev = V0, torch.zeros_like(V0), V0.new_zeros(P)
    for j in range(k):
        Qs[j] = q
        w = _orth_against(apply(q), U)
        a = (q * w).sum(0)
        alpha[j] = a
        w = w - a * q - b_prev * q_prev
        for _ in range(2):  # full reorthogonalisation against this run's vectors
            Qj = Qs[: j + 1]  # [j+1, n, P]; multiply-and-sum beats einsum's bmm path here
            c = (Qj * w).sum(1)  # [j+1, P]
            w = _orth_against(w - (Qj * c[:, None, :]).sum(0), U)
        b = torch.linalg.vector_norm(w, dim=0)
        dead = b <= tol_b
        b = torch.where(dead, torch.zeros_like(b), b)
        beta[j] = b
        q_prev = q
        q = torch.where(dead, torch.zeros_like(w), w / b.clamp_min(torch.finfo(b.dtype).tiny))
        b_prev = b
    return alpha, beta


def _quadrature(alpha: torch.Tensor, beta: torch.Tensor, scale: torch.Tensor):
    """Nodes, weights and Ritz residuals ``[P, k]`` of each run's Gauss quadrature.

    ``alpha`` ``[k, P]``, ``beta`` ``[k, P]`` (``beta[:k-1]`` off the diagonal, ``beta[k-1]`` the
    coupling to the next Lanczos vector); ``scale`` ``[P]`` multiplies the weights τ².
    """
    k, P = alpha.shape
    T = torch.diag_embed(alpha.mT)
    if k > 1:
        off = torch.diag_embed(beta[: k - 1].mT, offset=1)
        T = T + off + off.mT
    theta, Y = torch.linalg.eigh(T)
    res = beta[k - 1][:, None].abs() * Y[:, k - 1, :].abs()
    return theta, scale[:, None] * Y[:, 0, :] ** 2, res


def _synthetic(top: torch.Tensor, nodes: torch.Tensor, wts: torch.Tensor, n: int, zero_tol: float,
               trace_rest: float) -> torch.Tensor:
    """``n`` descending singular values: deflated ones, then the quadrature measure's quantiles,
    rescaled so that their squares sum to the exact remaining trace ``trace_rest``."""
    m = top.numel()
    rest = n - m
    th = nodes.double().reshape(-1).clamp_min(0)
    w = wts.double().reshape(-1).clamp_min(0)
    total = float(w.sum())
    out = np.zeros(rest)
    if rest > 0 and total > 0:
        w = w * (rest / total)
        pos = th > zero_tol
        n_pos = min(rest, int(round(float(w[pos].sum()))))
        if n_pos > 0:
            tp, wp = th[pos].numpy(), w[pos].numpy()
            order = np.argsort(-tp)
            tp, wp = tp[order], wp[order] * (n_pos / wp.sum())
            mid = np.cumsum(wp) - wp / 2
            out[:n_pos] = np.interp(np.arange(n_pos) + 0.5, mid, tp)
            if out.sum() > 0 and trace_rest > 0:
                out *= trace_rest / out.sum()
    lam = np.concatenate([top.double().clamp_min(0).numpy(), out])
    lam[lam <= zero_tol] = 0.0
    return torch.from_numpy(np.sort(np.sqrt(lam))[::-1].copy())


def approx_spectrum(M: torch.Tensor, opts: ApproxOptions | None = None) -> MatrixSpectrum:
    """Approximate singular values of a dense ``M`` (see the module docstring).

    ``M``: ``[rows, cols]`` in the working dtype on any device (all algebra stays there).
    Returns an :class:`ApproxSpectrum`, or an exact :class:`MatrixSpectrum` when the smaller side
    is below ``opts.min_dim`` or too small for the requested Krylov sizes.
    """
    opts = opts or ApproxOptions()
    rows, cols = M.shape
    n = min(rows, cols)
    n21 = column_norms_21(M)
    m_vec = opts.block * (opts.block_steps + 1)
    if n < opts.min_dim or n < 2 * m_vec or n <= opts.steps + m_vec:
        s, how = ff_singular_values(M, "auto")
        return MatrixSpectrum(s.cpu(), rows, cols, n21, how)

    def apply(X: torch.Tensor) -> torch.Tensor:
        # G X with X [n, b] in row-major order; Mᵀ X is formed as (Xᵀ M)ᵀ, which BLAS runs as a
        # wide product (measured 2-10x faster than M.mT @ X on a column-major X)
        X = X.contiguous()
        if rows <= cols:
            return M @ (X.mT @ M).mT
        return ((M @ X).mT @ M).mT

    gen = torch.Generator(device=M.device).manual_seed(opts.seed)
    eps = torch.finfo(M.dtype).eps
    Q, GQ = _block_krylov(apply, n, opts.block, opts.block_steps, gen, M)
    T = Q.mT @ GQ
    theta, Y = torch.linalg.eigh((T + T.mT) / 2)
    theta, Y = theta.flip(0), Y.flip(1)
    U = Q @ Y
    res = torch.linalg.vector_norm(GQ @ Y - U * theta, dim=0)
    lam1 = max(float(theta[0]), 0.0)
    if lam1 == 0.0:  # the zero matrix
        z = torch.zeros(0, dtype=torch.float64)
        return ApproxSpectrum(torch.zeros(n, dtype=torch.float64), rows, cols, n21, "slq", 0.0, z, z,
                              z.reshape(1, 0), z.reshape(1, 0), z.reshape(1, 0), z.reshape(1, 0), 0.0)
    zero_tol = 10.0 * n * eps * lam1
    conv = res <= opts.tol * lam1
    Uc, top, top_res = U[:, conv], theta[conv].clamp_min(0), res[conv]
    P = opts.probes
    Z = torch.randint(0, 2, (n, P), generator=gen, device=M.device).to(M.dtype) * 2 - 1
    Z = _orth_against(Z, Uc)
    zn2 = (Z * Z).sum(0)
    V0 = Z / zn2.sqrt().clamp_min(torch.finfo(M.dtype).tiny)
    alpha, beta = _lanczos(apply, V0, opts.steps, Uc, tol_b=100.0 * math.sqrt(n) * eps * lam1)
    nodes, wts, nres = _quadrature(alpha, beta, zn2 / P)
    nodes_prev, wts_prev, _ = _quadrature(alpha[:-1], beta[:-1], zn2 / P)
    # λ_1 ≥ every Ritz value. Take the largest (block Krylov or a probe's Lanczos run) and bound
    # λ_1 − θ by its residual ρ, or by ρ²/gap when it is separated from the next Ritz value of
    # the same run by gap > ρ (Kato–Temple; gap taken conservatively as (θ − θ' − ρ') / 10).
    v = int(nodes.max(dim=1).values.argmax())
    if float(nodes[v, -1]) > lam1:
        t1, r1, t2, r2 = (float(nodes[v, -1]), float(nres[v, -1]), float(nodes[v, -2]), float(nres[v, -2]))
    else:
        t1, r1 = lam1, float(res[0])
        t2, r2 = (float(theta[1]), float(res[1])) if theta.numel() > 1 else (0.0, r1)
    lam_top = t1
    gap = (t1 - t2 - r2) / GAP_SAFETY  # λ_2 may lie above its Ritz value θ_2: a safety factor
    err_lam = min(r1, r1 * r1 / gap) if gap > r1 else r1
    s1 = math.sqrt(lam_top)
    trace_rest = max(float((M.double() * M.double()).sum()) - float(top.double().sum()), 0.0)
    values = _synthetic(top.cpu(), nodes.cpu(), wts.cpu(), n, zero_tol, trace_rest)
    values = values.clamp(max=s1)  # σ_1 is the Ritz estimate; no synthetic value above it
    values[0] = s1
    cpu = lambda t: t.detach().double().cpu()  # noqa: E731
    return ApproxSpectrum(
        values.to(M.dtype), rows, cols, n21, "slq",
        sigma1_err=max(math.sqrt(lam_top + err_lam) - s1, 10 * eps * s1),  # floor: rounding
        top=cpu(top), top_res=cpu(top_res), nodes=cpu(nodes), wts=cpu(wts),
        nodes_prev=cpu(nodes_prev), wts_prev=cpu(wts_prev), zero_tol=zero_tol, trace_rest=trace_rest,
    )


APPROX_NOTE = (
    "approximate spectra (--approx): M_in/M_out singular values are Lanczos / stochastic Lanczos "
    "quadrature estimates (QK/OV are exact); error estimates per matrix are in the *_err columns "
    "of the matrix table, so this value is approximate"
)
