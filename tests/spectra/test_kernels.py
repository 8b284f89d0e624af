"""spectra/kernels.py: factored spectra against dense SVDs of the formed products; the Gram route and its guard."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specbound.spectra.kernels import GRAM_BLOCK, factored_product, ff_singular_values, gram_eigenvalues, gram_lower


@settings(max_examples=25, deadline=None)
@given(
    H=st.integers(1, 4),
    N=st.integers(2, 40),
    d=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    rank_drop=st.booleans(),
)
def test_factored_equals_dense_svd(H, N, d, seed, rank_drop):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(H, N, d, generator=g, dtype=torch.float64)
    B = torch.randn(H, N, d, generator=g, dtype=torch.float64) * 3.0
    if rank_drop and d > 1:  # a rank-deficient factor: its core has exact-ish zeros too
        A[..., -1] = A[..., 0]
    s = factored_product(A, B)[0]
    dense = torch.linalg.svdvals(A @ B.mT)
    k = s.shape[-1]
    assert k == min(N, d)
    torch.testing.assert_close(s, dense[..., :k], rtol=1e-10, atol=1e-10 * float(dense.max()))
    # the rest of the dense spectrum is floating-point noise around the exact zeros
    assert dense[..., k:].numpy().max(initial=0.0) <= 1e-12 * float(dense.max())


@settings(max_examples=25, deadline=None)
@given(H=st.integers(1, 3), N=st.integers(2, 30), d=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_norm21_without_product(H, N, d, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(H, N, d, generator=g, dtype=torch.float64)
    B = torch.randn(H, N, d, generator=g, dtype=torch.float64)
    brute = torch.linalg.vector_norm(A @ B.mT, dim=-2).sum(-1)  # Σ_j ‖column j‖
    torch.testing.assert_close(factored_product(A, B)[1], brute, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(8, 20), (20, 8), (13, 13)])
def test_gram_route_matches_svd_on_well_conditioned(shape):
    M = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s, how = ff_singular_values(M, "auto")
    assert how == "gram"
    torch.testing.assert_close(s, torch.linalg.svdvals(M), rtol=1e-10, atol=0)


def test_gram_guard_falls_back_on_ill_conditioned():
    """σ from 1 down to 1e-9: the Gram route would lose the small values; auto must take the SVD."""
    g = torch.Generator().manual_seed(0)
    n = 30
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(2 * n, n, generator=g, dtype=torch.float64))
    sig = torch.logspace(0, -9, n, dtype=torch.float64)
    M = U @ torch.diag(sig) @ V.T
    s_gram, _ = ff_singular_values(M, "gram")
    rel_gram = ((s_gram - sig) / sig).abs().max()
    assert rel_gram > 1e-3  # the naive route is really wrong here
    s_auto, how = ff_singular_values(M, "auto")
    assert how == "svd"
    assert float(((s_auto - sig) / sig).abs().max()) < 1e-5


def test_gram_guard_threshold_is_the_documented_rule():
    """Accept exactly when λ_min ≥ n·ε·λ_max / (2·1e-8)."""
    n = 16
    eps = torch.finfo(torch.float64).eps
    ratio = n * eps / (2 * 1e-8)  # λ_min / λ_max at the boundary
    for factor, expected in ((2.0, "gram"), (0.5, "svd")):
        sig = torch.ones(n, dtype=torch.float64)
        sig[-1] = (ratio * factor) ** 0.5
        M = torch.diag(sig)
        assert ff_singular_values(M, "auto")[1] == expected


def test_zero_matrix_is_valid():
    s, how = ff_singular_values(torch.zeros(5, 7, dtype=torch.float64), "auto")
    assert torch.count_nonzero(s) == 0
    A = torch.zeros(2, 6, 3, dtype=torch.float64)
    assert torch.count_nonzero(factored_product(A, torch.randn(2, 6, 3, dtype=torch.float64))[0]) == 0


def test_gram_lower_is_the_lower_triangle_of_the_full_product():
    """Row-blocked Gram: the lower triangle equals the full product's; the eigenvalues agree."""
    g = torch.Generator().manual_seed(3)
    n = 2 * GRAM_BLOCK + 17  # blocked, with a ragged last block
    for M in (torch.randn(n, n + 50, generator=g, dtype=torch.float64),
              torch.randn(n + 50, n, generator=g, dtype=torch.float64)):
        A = M if M.shape[0] <= M.shape[1] else M.mT
        full = A @ A.mT
        G = gram_lower(M)
        torch.testing.assert_close(G.tril(), full.tril(), rtol=1e-13, atol=1e-13 * float(full.abs().max()))
        lam, ref = torch.linalg.eigvalsh(G, UPLO="L"), torch.linalg.eigvalsh(full)
        torch.testing.assert_close(lam, ref, rtol=0, atol=1e-12 * float(ref.max()))
        s, how = ff_singular_values(M, "auto")
        assert how == "gram"
        torch.testing.assert_close(s, torch.linalg.svdvals(M), rtol=1e-10, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_eigenvalues_cpu_route_on_every_layout(dtype):
    """The CPU (numpy syrk + eigvalsh) route gives the eigenvalues of the smaller Gram matrix for
    wide, tall, transposed (F-ordered) and strided inputs, descending, accumulated in float64
    whatever the input's dtype (a float32 input to float64 accuracy: exact upcast);
    and agrees with the torch route (gram_lower + eigvalsh) the other devices take."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(70, 45, generator=g, dtype=torch.float64)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    cases = {
        "tall": base,
        "wide": base.T.contiguous(),
        "transposed view": base.T,
        "strided view": torch.randn(140, 90, generator=g, dtype=torch.float64)[::2, ::2],
        "requires grad": base.clone().requires_grad_(True),
    }
    for name, M64 in cases.items():
        M = M64.to(dtype) if dtype != M64.dtype else M64
        lam = gram_eigenvalues(M)
        assert lam.dtype == torch.float64 and lam.shape == (min(M.shape),), name
        assert bool((lam[:-1] >= lam[1:]).all()), name
        A = M64.detach() if M64.shape[0] <= M64.shape[1] else M64.detach().mT
        A = A.to(dtype).double()  # the input as rounded to its dtype, then exactly in float64
        ref = torch.linalg.eigvalsh(A @ A.mT).flip(-1)
        torch.testing.assert_close(lam, ref, rtol=0, atol=1e-12 * float(ref[0]), msg=name)
        torch_route = torch.linalg.eigvalsh(gram_lower(M.detach().double()), UPLO="L").flip(-1)
        torch.testing.assert_close(lam, torch_route, rtol=0, atol=tol * float(ref[0]), msg=name)
