"""Linear-algebra kernels of the spectra: factored products, Gram eigenvalues, dense SVDs.

Factored route (``bounds.md`` §2): for a product ``A Bᵀ`` of thin factors ``A, B ∈ R^{N×d}``
take thin QR ``A = Q_a R_a``, ``B = Q_b R_b``; then ``σ(A Bᵀ) = σ(R_a R_bᵀ)`` (a ``d × d`` core)
and the remaining ``N − d`` singular values are exactly zero. All heads of a block are batched
in one QR and one SVD call.

Feed-forward matrices are dense. ``ff_method="auto"`` takes the eigenvalues of the smaller Gram
matrix when that is accurate and otherwise the SVD (:func:`ff_singular_values`). On the CPU the
Gram product and its eigenvalues go through numpy's BLAS/LAPACK (:func:`gram_eigenvalues`):
with the OpenBLAS that numpy wheels ship this pair ran 1.4× faster than torch's (MKL)
:func:`gram_lower` + ``eigvalsh`` on this project's machine (AMD EPYC, ``bench/``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch

FFMethod = Literal["auto", "gram", "svd"]
FF_METHODS = ("auto", "gram", "svd")

#: Relative accuracy demanded of every singular value on the Gram route, per working dtype.
GRAM_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3}

#: Row-block size of :func:`gram_lower`; smaller Gram matrices are one product.
GRAM_BLOCK = 192


def descending(s: torch.Tensor) -> torch.Tensor:
    """``s`` clamped at 0 and sorted descending along the last axis."""
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
    return descending(torch.linalg.svdvals(Ra @ Rb.mT)), torch.linalg.vector_norm(B @ Ra.mT, dim=-1).sum(dim=-1)


def dense_product(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`factored_product` by forming ``P = A Bᵀ`` and taking its dense SVD (the published
    procedure, for parity: its "zero" singular values are floating-point noise)."""
    P = A @ B.mT
    return descending(torch.linalg.svdvals(P)), torch.linalg.vector_norm(P, dim=-2).sum(-1)


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


def gram_eigenvalues_numpy(A: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending, ``A``'s dtype) of the smaller Gram matrix of the 2-D array ``A``.

    ``A`` is taken in its wide orientation (``A`` or ``A.T``, a view); ``W @ W.T`` of an array with
    its own transpose is one BLAS ``syrk`` (half the multiply-adds of a general product) and
    ``numpy.linalg.eigvalsh`` is LAPACK ``syevd``. A strided view that BLAS cannot take is copied.
    """
    W = A.T if A.shape[0] > A.shape[1] else A
    if not (W.flags.c_contiguous or W.flags.f_contiguous):  # BLAS needs one unit stride
        W = np.ascontiguousarray(W)
    return np.ascontiguousarray(np.linalg.eigvalsh(W @ W.T)[::-1])


#: The dtype every Gram matrix is accumulated and diagonalised in, whatever the working dtype: a
#: float32 Gram matrix squares the condition number in float32 (eigenvalue errors of about
#: ``n·ε₃₂·λ_max``, which the accuracy guard refuses on 7B-shaped feed-forward matrices, sending
#: float32 runs to the full SVD); products of float32 inputs accumulated in float64 are exact
#: to ``n·ε₆₄``, so the float32 mode keeps the Gram route (issue 18).
GRAM_DTYPE = torch.float64


def gram_eigenvalues(M: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, float64 (:data:`GRAM_DTYPE`), on ``M``'s device) of the smaller
    Gram matrix of ``M`` (a float32 ``M`` is upcast to float64 first: exact).

    On the CPU through numpy (:func:`gram_eigenvalues_numpy`: BLAS ``syrk`` + LAPACK ``syevd``;
    the threads numpy's BLAS uses are set by :func:`blas_threads`). Same arithmetic as torch's
    route, so the same accuracy (results differ in the last bits). On other devices:
    :func:`gram_lower` and ``torch.linalg.eigvalsh``.
    """
    M = M.to(GRAM_DTYPE)
    if M.device.type != "cpu":
        return torch.linalg.eigvalsh(gram_lower(M), UPLO="L").flip(-1)
    return torch.from_numpy(gram_eigenvalues_numpy(M.detach().numpy()))


def ff_singular_values(M: torch.Tensor, method: FFMethod = "auto") -> tuple[torch.Tensor, str]:
    """Singular values of a dense matrix ``M`` (descending) and the route taken.

    ``gram``: ``σ = sqrt(eig(G))`` with ``G`` the smaller Gram matrix (``M Mᵀ`` or ``Mᵀ M``).
    The eigenvalues of ``G`` carry an absolute error of about ``n·ε·λ_max``, so ``σ_i`` has
    relative error about ``n·ε·λ_max / (2 λ_i)``. ``auto`` accepts the Gram route only when
    that estimate for the smallest eigenvalue is below :data:`GRAM_TOLERANCE` of the dtype
    (1e-8 in float64), i.e. when ``λ_min ≥ n·ε·λ_max / (2·tol)``; otherwise it falls back to
    the SVD (``torch.linalg.svdvals``), which is accurate to ``ε·σ_1`` for every value.

    The Gram matrix is accumulated in float64 (:data:`GRAM_DTYPE`) for every working dtype; the
    values are returned in ``M``'s dtype. ``M`` should be scaled (:func:`scale_exponent`) so
    its Gram matrix cannot overflow.
    """
    if method == "svd":
        return descending(torch.linalg.svdvals(M)), "svd"
    lam = gram_eigenvalues(M)
    if method == "gram" or gram_accepted(lam, M.dtype):
        return lam.clamp_min(0).sqrt().to(M.dtype), "gram"
    return descending(torch.linalg.svdvals(M)), "svd"


def gram_accepted(lam: torch.Tensor, dtype: torch.dtype) -> bool:
    """The accuracy guard of :func:`ff_singular_values`: Gram eigenvalues ``lam`` (descending) of
    an ``n × n`` Gram matrix accumulated in ``lam``'s dtype (float64, :data:`GRAM_DTYPE`) give
    every singular value to the working ``dtype``'s :data:`GRAM_TOLERANCE` when
    ``λ_min ≥ n·ε·λ_max / (2·tol)`` with ``ε`` that of the Gram matrix (or the matrix is zero)."""
    n = lam.shape[-1]
    lam_max = lam[0].item()
    if lam_max == 0.0:
        return True
    eps = torch.finfo(lam.dtype).eps
    return lam[-1].item() >= n * eps * lam_max / (2 * GRAM_TOLERANCE.get(dtype, 1e-3))


#: A feed-forward matrix whose upcast copy exceeds this many bytes has its Gram matrix accumulated
#: block by block (:func:`gram_blocked`); smaller ones are upcast whole (one BLAS call).
FULL_UPCAST_BYTES = 64 * 2**20
#: The size of one upcast block of :func:`gram_blocked`.
BLOCK_BYTES = 32 * 2**20


def gram_blocked(M: torch.Tensor | tuple[torch.Tensor, ...], dtype: torch.dtype, device: torch.device,
                 block_bytes: int = BLOCK_BYTES, exponent: int = 0) -> tuple[torch.Tensor, float, float]:
    """``(eigenvalues of the smaller Gram matrix (descending), ‖M‖_{2,1}, ‖M‖_{1,1})`` of the stored
    ``M`` ``[rows, cols]`` without upcasting it whole; ``M`` may be a tuple of column blocks
    ``(M_0, M_1, …)`` of one matrix ``[M_0 | M_1 | …]`` (a gated ``M_in = [W_gate | W_up]``, never
    concatenated), each as stored.

    The smaller Gram matrix (``n × n``, ``n = min(rows, cols)``) is a sum over blocks of the long
    side: ``G = Σ_b A_b A_bᵀ`` with ``A = M`` (wide) or ``Mᵀ`` (tall) and ``A_b`` its column block
    ``[n, b]``, each upcast to ``dtype`` on ``device`` in turn (``b`` chosen so a block is at most
    ``block_bytes``). The column norms (of ``M``) and absolute sums are reduced per block too, so
    the memory is one ``n × n`` Gram matrix plus one block. The same arithmetic as the whole
    product, in another order of additions (results agree to rounding).

    Each block is rounded to the working ``dtype`` (the values the analysis works on) and then
    accumulated in float64 (:data:`GRAM_DTYPE`, exact products of float32 inputs), and scaled by
    ``2^-exponent`` (exact; :func:`scale_exponent`) so that no square overflows: the eigenvalues
    and ``‖M‖_{2,1}`` returned are those of ``2^-exponent · M``; ``‖M‖_{1,1}`` is unscaled (a sum
    of magnitudes, in float64).
    """
    parts = M if isinstance(M, tuple) else (M,)
    rows, cols = parts[0].shape[0], sum(p.shape[1] for p in parts)
    wide = rows <= cols
    if not wide and len(parts) > 1:  # a tall stack: its Gram matrix couples the parts
        parts = (torch.cat([p.to(dtype) for p in parts], dim=1),)
    n = min(rows, cols)
    itemsize = torch.empty((), dtype=GRAM_DTYPE).element_size()
    on_cpu = device.type == "cpu"
    G = np.zeros((n, n), dtype=np.float64) if on_cpu else torch.zeros(n, n, dtype=GRAM_DTYPE, device=device)
    # each block's product goes into one preallocated buffer, then into G: no fresh n × n array per
    # block (its page faults cost as much as the additions on 7B-shaped matrices). Not scipy's
    # dsyrk with beta = 1: its wrapper holds the GIL for the whole call, which serialises the
    # concurrent tasks of a layer (measured: 22.2 s against 17.9 s for M_in beside M_out).
    T = np.empty((n, n), dtype=np.float64) if on_cpu else None
    n21 = 0.0  # wide M: its columns are A's columns, whole in one block
    row_sq = torch.zeros(n, dtype=torch.float64)  # tall M: its columns are A's rows, summed over blocks
    l1 = 0.0
    scale = 2.0 ** -exponent
    for part in parts:
        A = part if wide else part.mT
        m = A.shape[1]
        b = max(1, min(m, block_bytes // max(1, n * itemsize)))
        for j in range(0, m, b):
            Ab = A[:, j:j + b].to(device=device, dtype=dtype)
            l1 += float(Ab.abs().sum(dtype=torch.float64))
            Ab = Ab.to(GRAM_DTYPE)
            if exponent:
                Ab.mul_(scale)
            if on_cpu:
                X = Ab.detach().numpy()
                if not (X.flags.c_contiguous or X.flags.f_contiguous):  # BLAS needs one unit stride
                    X = np.ascontiguousarray(X)
                np.matmul(X, X.T, out=T)  # one BLAS syrk per block (numpy: a matrix times its own transpose)
                G += T
            else:
                G += Ab @ Ab.mT
            if wide:
                n21 += float(torch.linalg.vector_norm(Ab, dim=0).sum())
            else:
                row_sq += (Ab * Ab).sum(dim=1, dtype=torch.float64).cpu()
            del Ab
    if not wide:
        n21 = float(row_sq.sqrt().sum())
    if on_cpu:
        del T
        lam = torch.from_numpy(np.ascontiguousarray(np.linalg.eigvalsh(G)[::-1]))
    else:
        lam = torch.linalg.eigvalsh(G).flip(-1)
    return lam, n21, l1


#: Below this many columns :func:`top_singular_value` takes a dense eigenvalue problem.
LANCZOS_MIN = 64


def top_singular_value(M: torch.Tensor) -> float:
    """``σ_1(M)`` without the rest of the spectrum, to rounding accuracy.

    ``σ_1² = λ_max(Mᵀ M)``. With ``k`` = the number of columns: for ``k ≤`` :data:`LANCZOS_MIN`, or
    off the CPU, the eigenvalues of the formed ``k × k`` Gram matrix; otherwise implicitly
    restarted Lanczos (ARPACK, ``scipy.sparse.linalg.eigsh``, ``tol=0``: machine precision) on
    ``v ↦ Mᵀ (M v)``, about ``2·rows·k`` flops per step instead of a dense SVD's ``O(rows·k²)``.
    The start vector is fixed (all ones), so the result is reproducible.
    """
    k = M.shape[-1]
    if k == 0 or M.shape[0] == 0:
        return 0.0
    if k <= LANCZOS_MIN or M.device.type != "cpu":
        G = M.mT @ M
        return float(torch.linalg.eigvalsh(G)[-1].clamp_min(0).sqrt())
    from scipy.sparse.linalg import LinearOperator, eigsh

    X = M.detach().numpy()
    op = LinearOperator((k, k), matvec=lambda v: X.T @ (X @ v), dtype=X.dtype)
    lam = eigsh(op, k=1, which="LA", tol=0, v0=np.ones(k, dtype=X.dtype), return_eigenvectors=False)
    return float(np.sqrt(max(float(lam[0]), 0.0)))


def column_norms_21(M: torch.Tensor) -> float:
    """``‖M‖_{2,1} = Σ_j ‖M[:, j]‖₂`` (row-vector orientation)."""
    return float(torch.linalg.vector_norm(M, dim=-2).sum())


def gram_blocked_l1(M: torch.Tensor | tuple[torch.Tensor, ...], dtype: torch.dtype, device: torch.device,
                    block_bytes: int = BLOCK_BYTES) -> float:
    """``‖M‖_{1,1}`` of the stored ``M`` (or of the column blocks of a tuple), upcast block by block
    (as :func:`gram_blocked` sums it)."""
    total = 0.0
    for part in (M if isinstance(M, tuple) else (M,)):
        itemsize = torch.empty((), dtype=dtype).element_size()
        b = max(1, min(part.shape[1], block_bytes // max(1, part.shape[0] * itemsize)))
        total += sum(float(part[:, j:j + b].to(device=device, dtype=dtype).abs().sum(dtype=torch.float64))
                     for j in range(0, part.shape[1], b))
    return float(total)


# -- scaling: no square of a representable value overflows (issue 17) -----------------------------


#: Weights whose largest magnitude lies in ``[2^-SAFE_EXPONENT, 2^SAFE_EXPONENT)`` are not scaled
#: (no product, Gram entry or square of theirs can overflow or underflow, even in float32):
#: their results stay bit for bit those of the unscaled computation.
SAFE_EXPONENT = 20


def scale_exponent(*ts: torch.Tensor) -> int:
    """The exponent ``e`` with ``max|t| · 2^-e`` in ``[0.5, 1)`` over the tensors ``ts``, or 0 when
    that maximum is within ``2^±SAFE_EXPONENT`` (or all are zero). Multiplying by the power of
    two ``2^-e`` is exact, so ``σ(2^-e·M) = 2^-e·σ(M)`` holds bit for bit, and the scaled matrix's
    Gram matrix and sums of squares cannot overflow (nor underflow to zero for tiny weights)."""
    m = 0.0
    for t in ts:
        if t.numel():
            m = max(m, float(torch.linalg.vector_norm(t.detach(), ord=float("inf")).double()))
    if m == 0.0 or not math.isfinite(m):
        return 0
    e = math.frexp(m)[1]
    return 0 if -SAFE_EXPONENT < e <= SAFE_EXPONENT else e


def scaled(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """``t · 2^-exponent`` (exact; a new tensor, or ``t`` itself when ``exponent`` is 0)."""
    return t if exponent == 0 else t * (2.0 ** -exponent)


def check_range(t: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Raise :class:`~specbound.errors.InputError` when ``t`` (as stored) holds a value beyond the
    range of the working ``dtype`` (its upcast would be ±inf), naming ``what``."""
    if dtype == torch.float64 or not t.numel() or not t.dtype.is_floating_point:
        return
    if torch.finfo(t.dtype).max <= torch.finfo(dtype).max:
        return
    m = float(torch.linalg.vector_norm(t.detach(), ord=float("inf")).double())
    if m > torch.finfo(dtype).max:
        from specbound.errors import InputError

        raise InputError(f"{what} has entries up to {m:.3g}, beyond the range of {str(dtype).removeprefix('torch.')} "
                         f"({torch.finfo(dtype).max:.3g}); analyse it with --dtype float64.")


def rescaled(x: torch.Tensor, exponent: int, dtype: torch.dtype, what: str) -> torch.Tensor:
    """``x · 2^exponent`` in ``dtype``: the values of a scaled computation brought back to the
    matrix's own scale. A value beyond ``dtype``'s range is an
    :class:`~specbound.errors.InputError` naming ``what`` (with ``--dtype float64`` suggested for
    float32; for float64 the value is beyond any float)."""
    y = x.double() * (2.0 ** exponent) if exponent else x.double()
    _check_finite_in(y, dtype, what)
    return y.to(dtype)


def rescaled_float(x: float, exponent: int, dtype: torch.dtype, what: str) -> float:
    """:func:`rescaled` of one number (a norm), returned as a Python float (float64)."""
    y = math.ldexp(x, exponent) if math.isfinite(x) else x
    _check_finite_in(torch.tensor([y], dtype=torch.float64), dtype, what)
    return y


def _check_finite_in(y: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    from specbound.errors import InputError

    if not bool(torch.isfinite(y).all()):
        bad = "NaN" if bool(torch.isnan(y).any()) else "beyond the range of float64"
        raise InputError(f"{what}: a singular value or norm is {bad}; the weights are too large to analyse "
                         "(rescale the checkpoint).")
    big = float(y.abs().max()) if y.numel() else 0.0
    if big > torch.finfo(dtype).max:
        raise InputError(f"{what}: a singular value or norm ({big:.3g}) is beyond the range of "
                         f"{str(dtype).removeprefix('torch.')} ({torch.finfo(dtype).max:.3g}); "
                         "analyse it with --dtype float64.")


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """numpy's BLAS/LAPACK (OpenBLAS in numpy wheels) on at most ``n`` threads, restored on exit.

    The CPU Gram route runs on numpy, whose BLAS otherwise starts a thread per core for every
    call: next to torch's threads, or several calls side by side, that oversubscribes the cores.
    ``threadpoolctl`` sets the limit of the BLAS libraries loaded in the process for the duration
    of the analysis (like ``torch.set_num_threads``, restored on exit).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, n), user_api="blas"):
        yield
