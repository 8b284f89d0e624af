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


def gram_eigenvalues(M: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, in ``M``'s dtype, on ``M``'s device) of the smaller Gram matrix of ``M``.

    On the CPU through numpy (:func:`gram_eigenvalues_numpy`: BLAS ``syrk`` + LAPACK ``syevd``;
    the threads numpy's BLAS uses are set by :func:`blas_threads`). Same arithmetic in the same
    dtype as torch's route, so the same accuracy (results differ in the last bits). On other
    devices: :func:`gram_lower` and ``torch.linalg.eigvalsh``.
    """
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
    """
    if method == "svd":
        return descending(torch.linalg.svdvals(M)), "svd"
    lam = gram_eigenvalues(M)
    if method == "gram" or gram_accepted(lam, M.dtype):
        return lam.clamp_min(0).sqrt(), "gram"
    return descending(torch.linalg.svdvals(M)), "svd"


def gram_accepted(lam: torch.Tensor, dtype: torch.dtype) -> bool:
    """The accuracy guard of :func:`ff_singular_values`: Gram eigenvalues ``lam`` (descending) of
    an ``n × n`` Gram matrix in ``dtype`` give every singular value to :data:`GRAM_TOLERANCE`
    when ``λ_min ≥ n·ε·λ_max / (2·tol)`` (or the matrix is zero)."""
    n = lam.shape[-1]
    lam_max = lam[0].item()
    if lam_max == 0.0:
        return True
    return lam[-1].item() >= n * torch.finfo(dtype).eps * lam_max / (2 * GRAM_TOLERANCE.get(dtype, 1e-3))


#: A feed-forward matrix whose upcast copy exceeds this many bytes has its Gram matrix accumulated
#: block by block (:func:`gram_blocked`); smaller ones are upcast whole (one BLAS call).
FULL_UPCAST_BYTES = 64 * 2**20
#: The size of one upcast block of :func:`gram_blocked`.
BLOCK_BYTES = 32 * 2**20


def gram_blocked(M: torch.Tensor, dtype: torch.dtype, device: torch.device,
                 block_bytes: int = BLOCK_BYTES) -> tuple[torch.Tensor, float, float]:
    """``(eigenvalues of the smaller Gram matrix (descending), ‖M‖_{2,1}, ‖M‖_{1,1})`` of the stored
    ``M`` ``[rows, cols]`` without upcasting it whole.

    The smaller Gram matrix (``n × n``, ``n = min(rows, cols)``) is a sum over blocks of the long
    side: ``G = Σ_b A_b A_bᵀ`` with ``A = M`` (wide) or ``Mᵀ`` (tall) and ``A_b`` its column block
    ``[n, b]``, each upcast to ``dtype`` on ``device`` in turn (``b`` chosen so a block is at most
    ``block_bytes``). The column norms (of ``M``) and absolute sums are reduced per block too, so
    the memory is one ``n × n`` Gram matrix plus one block. The same arithmetic as the whole
    product, in another order of additions (results agree to rounding).
    """
    rows, cols = M.shape
    wide = rows <= cols
    A = M if wide else M.mT
    n, m = A.shape
    itemsize = torch.empty((), dtype=dtype).element_size()
    b = max(1, min(m, block_bytes // max(1, n * itemsize)))
    on_cpu = device.type == "cpu"
    G = np.zeros((n, n), dtype=np.float64 if dtype == torch.float64 else np.float32) if on_cpu else \
        torch.zeros(n, n, dtype=dtype, device=device)
    n21 = 0.0  # wide M: its columns are A's columns, whole in one block
    row_sq = torch.zeros(n, dtype=torch.float64)  # tall M: its columns are A's rows, summed over blocks
    l1 = 0.0
    for j in range(0, m, b):
        Ab = A[:, j:j + b].to(device=device, dtype=dtype)
        if on_cpu:
            X = np.ascontiguousarray(Ab.detach().numpy())
            G += X @ X.T  # one BLAS syrk per block
        else:
            G += Ab @ Ab.mT
        if wide:
            n21 += float(torch.linalg.vector_norm(Ab, dim=0).sum())
        else:
            row_sq += (Ab * Ab).sum(dim=1, dtype=torch.float64).cpu()
        l1 += float(Ab.abs().sum(dtype=torch.float64))
        del Ab
    if not wide:
        n21 = float(row_sq.sqrt().sum())
    if on_cpu:
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


def gram_blocked_l1(M: torch.Tensor, dtype: torch.dtype, device: torch.device, block_bytes: int = BLOCK_BYTES) -> float:
    """``‖M‖_{1,1}`` of the stored ``M``, upcast block by block (as :func:`gram_blocked` sums it)."""
    A = M if M.shape[0] <= M.shape[1] else M.mT
    itemsize = torch.empty((), dtype=dtype).element_size()
    b = max(1, min(A.shape[1], block_bytes // max(1, A.shape[0] * itemsize)))
    return float(sum(float(A[:, j:j + b].to(device=device, dtype=dtype).abs().sum(dtype=torch.float64))
                     for j in range(0, A.shape[1], b)))


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
