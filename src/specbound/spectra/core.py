"""Exact singular-value spectra of the per-head products and the feed-forward matrices.

Factored route (default, ``bounds.md`` §2): for a product ``A Bᵀ`` of thin factors
``A, B ∈ R^{N×d_h}`` take thin QR ``A = Q_a R_a``, ``B = Q_b R_b``; then
``σ(A Bᵀ) = σ(R_a R_bᵀ)`` (a ``d_h × d_h`` core) and the remaining ``N − d_h`` singular values
are exactly zero. All heads of a layer are batched in one QR and one SVD call.

Feed-forward matrices are dense. ``ff_method="auto"`` takes the eigenvalues of the smaller Gram
matrix when that is accurate and otherwise the SVD (:func:`ff_singular_values`). On the CPU the
Gram product and its eigenvalues go through numpy's BLAS/LAPACK (:func:`gram_eigenvalues`).

``dense=True`` forms every ``N × N`` product and takes its dense SVD — the published procedure,
kept for parity checks; its "zero" singular values are floating-point noise.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from specbound.npkernels import gram_eigenvalues_numpy
from specbound.weights.canonical import LayerWeights

FFMethod = Literal["auto", "gram", "svd"]

#: Relative accuracy demanded of every singular value on the Gram route, per working dtype.
GRAM_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3}


@dataclass
class MatrixSpectrum:
    """Singular values of one matrix.

    ``values``: the computed singular values, descending (length ``k ≤ r``); ``r`` = min(rows,
    cols); the ``r − k`` singular values not listed are exactly zero. ``norm_21`` is
    ``Σ_j ‖A[:, j]‖₂`` in row-vector orientation. ``method`` records how the values were obtained.
    """

    values: torch.Tensor
    rows: int
    cols: int
    norm_21: float
    method: str

    @property
    def r(self) -> int:
        return min(self.rows, self.cols)

    def full(self) -> torch.Tensor:
        """All ``r`` singular values, the exact zeros included."""
        pad = self.r - self.values.numel()
        if pad <= 0:
            return self.values
        return torch.cat([self.values, self.values.new_zeros(pad)])


@dataclass
class LayerSpectra:
    """Spectra of one layer: ``qk[h]``, ``ov[h]`` per query head, ``m_in``, ``m_out``."""

    layer: int
    qk: list[MatrixSpectrum]
    ov: list[MatrixSpectrum]
    m_in: MatrixSpectrum
    m_out: MatrixSpectrum
    names: dict[str, str] = field(default_factory=dict)
    #: entrywise ‖·‖_{1,1} of the layer's weights (Trauger & Tewari's tracked quantities);
    #: ``None`` when the spectra were built without the weights (e.g. an older cache).
    weight_norms: "WeightNorms | None" = None


#: A 1-D tensor of ``LayerWeights.extras`` is a normalisation parameter when its name matches this.
_NORM_NAME = ("norm", "layernorm", "layer_norm", "ln_", ".ln", "rms")


def vector_label(name: str) -> str:
    """``"norm"`` (LayerNorm/RMSNorm weight or bias), ``"bias"`` or ``"other"``, by tensor name."""
    low = name.lower()
    if any(k in low for k in _NORM_NAME):
        return "norm"
    if low.endswith("bias") or ".bias" in low or low.startswith("b_") or "_bias" in low:
        return "bias"
    return "other"


@dataclass
class WeightNorms:
    """Entrywise norms ``‖W‖_{1,1} = Σ_ij |W_ij|`` of one layer's weights; O(params), no products.

    ``heads[k]``: per head of factor ``k`` (``W_Q``, ``W_O``: ``H`` values; ``W_K``, ``W_V``:
    ``H_kv`` values, one per key/value head as stored). ``totals[k]``: the whole weight
    (``W_Q``, ``W_K``, ``W_V``, ``W_O``, ``M_in``, ``M_out``; each parameter counted once).
    ``vectors[name] = (label, ‖v‖_1)`` for every 1-D tensor of ``LayerWeights.extras``, labelled
    ``bias``, ``norm`` or ``other`` by :func:`vector_label`. ``params``: parameter count per weight.
    """

    heads: dict[str, list[float]]
    totals: dict[str, float]
    vectors: dict[str, tuple[str, float]]
    params: dict[str, int]


def weight_norms(lw: LayerWeights) -> WeightNorms:
    """:class:`WeightNorms` of one layer (float64 sums of absolute values)."""
    heads: dict[str, list[float]] = {}
    totals: dict[str, float] = {}
    params: dict[str, int] = {}
    for k in ("W_Q", "W_K", "W_V", "W_O"):
        t = getattr(lw, k)
        per = t.abs().sum(dim=(-2, -1), dtype=torch.float64).cpu()
        heads[k] = [float(x) for x in per]
        totals[k] = float(per.sum())
        params[k] = t.numel()
    for k in ("M_in", "M_out"):
        t = getattr(lw, k)
        totals[k] = float(t.abs().sum(dtype=torch.float64))
        params[k] = t.numel()
    return WeightNorms(heads=heads, totals=totals, vectors=_vector_norms(lw), params=params)


def _vector_norms(lw: LayerWeights) -> dict[str, tuple[str, float]]:
    """``WeightNorms.vectors``: label and ‖v‖_1 of every 1-D tensor of ``lw.extras``."""
    return {
        name: (vector_label(name), float(v.detach().abs().sum(dtype=torch.float64)))
        for name, v in lw.extras.items()
        if v.ndim == 1
    }


def _descending(s: torch.Tensor) -> torch.Tensor:
    return torch.sort(s.clamp_min(0), dim=-1, descending=True).values


def factored_product(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values and ``‖·‖_{2,1}`` of ``A[h] @ B[h]ᵀ`` for every h, without forming it.

    ``A, B``: ``[H, N, d]``. Thin QR ``A = Q_a R_a``, ``B = Q_b R_b`` (batched over heads):
    the nonzero part of the spectrum is that of the core ``R_a R_bᵀ`` (``[H, min(N, d)]``,
    descending; the product's other ``N − min(N, d)`` singular values are exactly zero), and
    column j of ``A Bᵀ`` is ``A b_j = Q_a R_a b_j`` (``b_j`` = row j of B), whose norm is
    ``‖R_a b_j‖``: ``‖A Bᵀ‖_{2,1}`` is the sum of the row norms of ``B R_aᵀ`` (``[H]``).
    """
    Ra = torch.linalg.qr(A, mode="r").R  # [H, k, d]
    Rb = torch.linalg.qr(B, mode="r").R
    return _descending(torch.linalg.svdvals(Ra @ Rb.mT)), _norms_21(Ra, B)


def _norms_21(Ra: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``‖A Bᵀ‖_{2,1}`` per head from the R factor of ``A``: the sum of the row norms of ``B R_aᵀ``."""
    return torch.linalg.vector_norm(B @ Ra.mT, dim=-1).sum(dim=-1)


def factored_product_spectra(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The singular values of :func:`factored_product` alone (``[H, min(N, d)]``, descending)."""
    return factored_product(A, B)[0]


def product_column_norms_21(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``‖A[h] B[h]ᵀ‖_{2,1}`` for every h without the product (``[H]``; see :func:`factored_product`)."""
    return _norms_21(torch.linalg.qr(A, mode="r").R, B)


#: Row-block size of :func:`gram_lower`; smaller Gram matrices are one product.
GRAM_BLOCK = 192


def gram_lower(M: torch.Tensor) -> torch.Tensor:
    """The smaller Gram matrix of ``M`` (``M Mᵀ`` if ``M`` is wide, else ``Mᵀ M``), lower triangle.

    Entry ``(i, j)`` is the dot product of rows ``i`` and ``j`` of ``A`` (``A = M`` or ``Mᵀ``),
    as in the full product; only the block lower triangle is computed (row blocks of
    :data:`GRAM_BLOCK`, about 5/8 of the multiply-adds of the full product for n = 768), and the
    strictly upper blocks are zero. ``eigvalsh(G, UPLO="L")`` reads only the lower triangle.
    """
    A = M if M.shape[0] <= M.shape[1] else M.mT
    n = A.shape[0]
    if n < 2 * GRAM_BLOCK:
        return A @ A.mT
    G = A.new_zeros(n, n)
    for i in range(0, n, GRAM_BLOCK):
        j = min(i + GRAM_BLOCK, n)
        torch.matmul(A[i:j], A[:j].mT, out=G[i:j, :j])
    return G


def gram_eigenvalues(M: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, in ``M``'s dtype, on ``M``'s device) of the smaller Gram matrix of ``M``.

    On the CPU through numpy (:func:`specbound.npkernels.gram_eigenvalues_numpy`: BLAS ``syrk`` +
    LAPACK ``syevd``). With the OpenBLAS that numpy wheels ship this pair ran 1.4× faster than
    torch's (MKL) :func:`gram_lower` + ``eigvalsh`` on this project's machine (AMD EPYC,
    ``bench/``); the threads numpy's BLAS uses are set by
    :func:`specbound.spectra.model.task_threads`. Same arithmetic in the same dtype, so the same
    accuracy (results differ from torch's in the last bits). On other devices: :func:`gram_lower`
    and ``torch.linalg.eigvalsh``.
    """
    if M.device.type != "cpu":
        return torch.linalg.eigvalsh(gram_lower(M), UPLO="L").flip(-1)
    return torch.from_numpy(gram_eigenvalues_numpy(M.detach().numpy()))


def ff_singular_values(
    M: torch.Tensor, method: FFMethod = "auto", lam: torch.Tensor | None = None
) -> tuple[torch.Tensor, str]:
    """Singular values of a dense matrix ``M`` (descending) and the route taken.

    ``gram``: ``σ = sqrt(eig(G))`` with ``G`` the smaller Gram matrix (``M Mᵀ`` or ``Mᵀ M``).
    The eigenvalues of ``G`` carry an absolute error of about ``n·ε·λ_max``, so ``σ_i`` has
    relative error about ``n·ε·λ_max / (2 λ_i)``. ``auto`` accepts the Gram route only when
    that estimate for the smallest eigenvalue is below :data:`GRAM_TOLERANCE` of the dtype
    (1e-8 in float64), i.e. when ``λ_min ≥ n·ε·λ_max / (2·tol)``; otherwise it falls back to
    the SVD (``torch.linalg.svdvals``), which is accurate to ``ε·σ_1`` for every value.
    ``lam``: :func:`gram_eigenvalues` of ``M`` if already computed (the CLI's warm start).
    """
    if method == "svd":
        return _descending(torch.linalg.svdvals(M)), "svd"
    if lam is None:
        lam = gram_eigenvalues(M)
    if method == "gram":
        return lam.clamp_min(0).sqrt(), "gram"
    n = lam.shape[-1]
    eps = torch.finfo(M.dtype).eps
    tol = GRAM_TOLERANCE.get(M.dtype, 1e-3)
    lam_max = lam[0].item()
    if lam_max == 0.0:
        return lam.clamp_min(0).sqrt(), "gram"
    if lam[-1].item() >= n * eps * lam_max / (2 * tol):
        return lam.sqrt(), "gram"
    return _descending(torch.linalg.svdvals(M)), "svd"


def _column_norms_21(M: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(M, dim=-2).sum())


def layer_spectra(
    lw: LayerWeights, *, dense: bool = False, ff_method: FFMethod = "auto"
) -> LayerSpectra:
    """Spectra of every matrix of one layer (weights already in the working dtype/device).

    QK[h] = W_Q[h] W_Kᵀ[g(h)] and OV[h] = W_V[g(h)] W_O[h] with g(h) = h // (H / H_kv). The
    factored route is :func:`layer_spectra_tasks` run inline; ``dense`` forms every product.
    """
    if not dense:
        return layer_spectra_tasks(lw, _INLINE, device=lw.W_Q.device, dtype=lw.W_Q.dtype, ff_method=ff_method)
    H = lw.W_Q.shape[0]
    g = torch.arange(H, device=lw.W_Q.device) // (H // lw.W_K.shape[0])
    Wq, Wk, Wv, Wo = lw.W_Q, lw.W_K[g], lw.W_V[g], lw.W_O
    N = Wq.shape[1]
    N_out = Wo.shape[2]
    QK = Wq @ Wk.mT  # [H, N, N]
    OV = Wv @ Wo  # [H, N, N_out]
    qk_s = _descending(torch.linalg.svdvals(QK)).cpu()
    ov_s = _descending(torch.linalg.svdvals(OV)).cpu()
    qk_21 = torch.linalg.vector_norm(QK, dim=-2).sum(-1)
    ov_21 = torch.linalg.vector_norm(OV, dim=-2).sum(-1)
    del QK, OV
    qk = [MatrixSpectrum(qk_s[h], N, N, float(qk_21[h]), "dense") for h in range(H)]
    ov = [MatrixSpectrum(ov_s[h], N, N_out, float(ov_21[h]), "dense") for h in range(H)]
    s_in, how_in = ff_singular_values(lw.M_in, "svd")
    s_out, how_out = ff_singular_values(lw.M_out, "svd")
    m_in = MatrixSpectrum(s_in.cpu(), *lw.M_in.shape, _column_norms_21(lw.M_in), how_in)
    m_out = MatrixSpectrum(s_out.cpu(), *lw.M_out.shape, _column_norms_21(lw.M_out), how_out)
    return LayerSpectra(
        layer=lw.index, qk=qk, ov=ov, m_in=m_in, m_out=m_out, names=lw.names, weight_norms=weight_norms(lw)
    )


class _InlineExecutor(Executor):
    """Runs each submitted call at once in the calling thread (the sequential route)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # delivered by .result(), as from a thread pool
            fut.set_exception(e)
        return fut


_INLINE = _InlineExecutor()


def _abs_last(t: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """``|t|`` for the last use of ``t``: in place when ``t`` is this task's own upcast copy (saves
    an allocation the size of the weight), a new tensor when ``t`` is the caller's ``raw`` itself."""
    return t.abs() if t is raw else t.abs_()


def _abs_total(t: torch.Tensor, raw: torch.Tensor) -> float:
    return float(_abs_last(t, raw).sum(dtype=torch.float64))


def _heads_abs(t: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    return _abs_last(t, raw).sum(dim=(-2, -1), dtype=torch.float64).cpu()


def layer_spectra_tasks(
    lw: LayerWeights,
    executor: Executor,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    ff_method: FFMethod = "auto",
    ff_eigenvalues: "Callable[[str | None, torch.Tensor], torch.Tensor | None] | None" = None,
) -> LayerSpectra:
    """:func:`layer_spectra` (factored route) of the layer *as read*, as four tasks on ``executor``.

    The tasks are ``M_in``, ``M_out`` (upcast, Gram route or SVD, ‖·‖_{2,1}, ‖·‖_{1,1}), then
    QK (``W_Q``, ``W_K``) and OV (``W_V``, ``W_O``); each upcasts its own tensors to ``dtype``
    on ``device``, so conversions run in parallel too. The numbers are those of
    :func:`layer_spectra` on ``lw.to(device, dtype)``: the same operations on the same values,
    only run concurrently (torch releases the GIL in them). Returns when all four are done.
    ``ff_eigenvalues(name, raw)``: Gram eigenvalues of a feed-forward matrix computed beforehand
    (the CLI's warm start, ``specbound/warmstart.py``), or ``None`` to compute them here.
    """
    def up(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype)

    def ff(raw: torch.Tensor, kind: str) -> tuple[MatrixSpectrum, float]:
        M = up(raw)
        lam = ff_eigenvalues(lw.names.get(kind), raw) if ff_eigenvalues is not None else None
        s, how = ff_singular_values(M, ff_method, lam=lam)
        spec = MatrixSpectrum(s.cpu(), *M.shape, _column_norms_21(M), how)
        return spec, _abs_total(M, raw)  # last use of M (abs in place)

    H = lw.W_Q.shape[0]
    g = torch.arange(H, device=lw.W_Q.device) // (H // lw.W_K.shape[0])

    def product(a_raw: torch.Tensor, b_raw: torch.Tensor, kind: str) -> tuple[Any, ...]:
        a, b = up(a_raw), up(b_raw)
        if kind == "qk":  # QK[h] = W_Q[h] W_K[g(h)]ᵀ
            A, B = a, b[g.to(b.device)]
        else:  # OV[h] = W_V[g(h)] W_O[h] = W_V[g(h)] (W_O[h]ᵀ)ᵀ
            A, B = a[g.to(a.device)], b.mT
        s, n21 = factored_product(A, B)
        s = s.cpu()
        rows, cols = A.shape[1], B.shape[1]
        specs = [MatrixSpectrum(s[h], rows, cols, float(n21[h]), "factored") for h in range(H)]
        del A, B
        return specs, (_heads_abs(a, a_raw), _heads_abs(b, b_raw))  # last use of a, b (abs in place)

    f_in = executor.submit(ff, lw.M_in, "M_in")
    f_out = executor.submit(ff, lw.M_out, "M_out")
    f_qk = executor.submit(product, lw.W_Q, lw.W_K, "qk")
    f_ov = executor.submit(product, lw.W_V, lw.W_O, "ov")
    (m_in, t_in), (m_out, t_out) = f_in.result(), f_out.result()
    (qk, (h_q, h_k)), (ov, (h_v, h_o)) = f_qk.result(), f_ov.result()
    per = {"W_Q": h_q, "W_K": h_k, "W_V": h_v, "W_O": h_o}  # as in weight_norms
    norms = WeightNorms(
        heads={k: [float(x) for x in v] for k, v in per.items()},
        totals={**{k: float(v.sum()) for k, v in per.items()}, "M_in": t_in, "M_out": t_out},
        vectors=_vector_norms(lw),
        params={k: getattr(lw, k).numel() for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out")},
    )
    return LayerSpectra(layer=lw.index, qk=qk, ov=ov, m_in=m_in, m_out=m_out, names=lw.names, weight_norms=norms)
