"""Factored spectra against dense SVDs of the formed products; the Gram route and its guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specbound.spectra import factored_product_spectra, ff_singular_values, layer_spectra, product_column_norms_21
from specbound.weights.canonical import LayerWeights


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
    s = factored_product_spectra(A, B)
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
    torch.testing.assert_close(product_column_norms_21(A, B), brute, rtol=1e-10, atol=1e-12)


def test_gqa_head_mapping_and_ov_orientation():
    """Query head h reads KV head h // (H/H_kv); OV = W_V W_O in row-vector orientation."""
    g = torch.Generator().manual_seed(1)
    H, Hkv, N, d, F = 4, 2, 10, 3, 7
    lw = LayerWeights(
        index=0,
        W_Q=torch.randn(H, N, d, generator=g, dtype=torch.float64),
        W_K=torch.randn(Hkv, N, d, generator=g, dtype=torch.float64),
        W_V=torch.randn(Hkv, N, d, generator=g, dtype=torch.float64),
        W_O=torch.randn(H, d, N, generator=g, dtype=torch.float64),
        M_in=torch.randn(N, F, generator=g, dtype=torch.float64),
        M_out=torch.randn(F, N, generator=g, dtype=torch.float64),
    )
    ls = layer_spectra(lw)
    for h in range(H):
        kv = h // 2
        qk = lw.W_Q[h] @ lw.W_K[kv].T
        ov = lw.W_V[kv] @ lw.W_O[h]
        np.testing.assert_allclose(ls.qk[h].full().numpy(), torch.linalg.svdvals(qk).numpy(), atol=1e-10)
        np.testing.assert_allclose(ls.ov[h].full().numpy(), torch.linalg.svdvals(ov).numpy(), atol=1e-10)
        assert ls.qk[h].norm_21 == pytest.approx(float(qk.norm(dim=0).sum()), rel=1e-12)
        assert ls.ov[h].norm_21 == pytest.approx(float(ov.norm(dim=0).sum()), rel=1e-12)
    assert ls.m_in.norm_21 == pytest.approx(float(lw.M_in.norm(dim=0).sum()), rel=1e-12)
    dense = layer_spectra(lw, dense=True)
    for h in range(H):
        np.testing.assert_allclose(dense.qk[h].values[:d].numpy(), ls.qk[h].values.numpy(), rtol=1e-10)
        assert dense.qk[h].norm_21 == pytest.approx(ls.qk[h].norm_21, rel=1e-12)


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
    assert torch.count_nonzero(factored_product_spectra(A, torch.randn(2, 6, 3, dtype=torch.float64))) == 0


def test_gram_lower_is_the_lower_triangle_of_the_full_product():
    """Row-blocked Gram: the lower triangle equals the full product's; the eigenvalues agree."""
    from specbound.spectra.core import GRAM_BLOCK, gram_lower

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


@pytest.mark.parametrize("H,Hkv,dtype", [(4, 4, torch.float32), (4, 2, torch.float64), (6, 3, torch.bfloat16)])
def test_layer_spectra_tasks_equals_layer_spectra(H, Hkv, dtype):
    """The threaded per-layer tasks give layer_spectra's numbers on the upcast layer."""
    from concurrent.futures import ThreadPoolExecutor

    from specbound.spectra.core import layer_spectra_tasks

    g = torch.Generator().manual_seed(H + Hkv)
    N, d, F = 12, 3, 20
    lw = LayerWeights(
        index=2,
        W_Q=torch.randn(H, N, d, generator=g).to(dtype),
        W_K=torch.randn(Hkv, N, d, generator=g).to(dtype),
        W_V=torch.randn(Hkv, N, d, generator=g).to(dtype),
        W_O=torch.randn(H, d, N, generator=g).to(dtype),
        M_in=torch.randn(F, N, generator=g).to(dtype).T,  # transposed views, as adapters give them
        M_out=torch.randn(N, F, generator=g).to(dtype).T,
        names={"W_Q": "q"},
        extras={"x.bias": torch.randn(N, generator=g), "x.LayerNorm.weight": torch.randn(N, generator=g)},
    )
    ref = layer_spectra(lw.to("cpu", torch.float64))
    before = {k: getattr(lw, k).clone() for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out")}
    with ThreadPoolExecutor(2) as ex:
        got = layer_spectra_tasks(lw, ex, device="cpu", dtype=torch.float64)
    for k, t in before.items():  # the caller's tensors are never modified (abs in place on copies only)
        assert torch.equal(getattr(lw, k), t), k
    assert got.layer == 2 and got.names == {"W_Q": "q"}
    for a, b in [*zip(ref.qk, got.qk), *zip(ref.ov, got.ov), (ref.m_in, got.m_in), (ref.m_out, got.m_out)]:
        assert torch.equal(a.values, b.values)
        assert (a.rows, a.cols, a.norm_21, a.method) == (b.rows, b.cols, b.norm_21, b.method)
    assert got.weight_norms == ref.weight_norms


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_eigenvalues_cpu_route_on_every_layout(dtype):
    """The CPU (numpy syrk + eigvalsh) route gives the eigenvalues of the smaller Gram matrix for
    wide, tall, transposed (F-ordered) and strided inputs, descending, in the input's dtype;
    and agrees with the torch route (gram_lower + eigvalsh) the other devices take."""
    from specbound.spectra.core import gram_eigenvalues, gram_lower

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
        assert lam.dtype == dtype and lam.shape == (min(M.shape),), name
        assert bool((lam[:-1] >= lam[1:]).all()), name
        A = M64.detach() if M64.shape[0] <= M64.shape[1] else M64.detach().mT
        ref = torch.linalg.eigvalsh(A @ A.mT).flip(-1)
        torch.testing.assert_close(lam.double(), ref, rtol=0, atol=tol * float(ref[0]), msg=name)
        torch_route = torch.linalg.eigvalsh(gram_lower(M.detach()), UPLO="L").flip(-1)
        torch.testing.assert_close(lam, torch_route, rtol=0, atol=tol * float(ref[0]), msg=name)


def test_task_threads_limit_numpy_blas_and_restore_it():
    """Inside task_threads numpy's BLAS runs on n // w threads (one per task on 2 threads); the
    process settings (torch threads, BLAS threads) are back afterwards."""
    from threadpoolctl import threadpool_info

    from specbound.spectra.model import MAX_TASKS, task_threads

    def blas() -> list[int]:
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    before = blas()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can control is loaded by numpy here")
    n_torch = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with task_threads(torch.device("cpu")) as pool:
            assert pool is not None
            assert blas() == [max(1, 2 // min(2, MAX_TASKS))] * len(before)
            assert torch.get_num_threads() == 1
        assert blas() == before and torch.get_num_threads() == 2
        torch.set_num_threads(1)
        with task_threads(torch.device("cpu")) as pool:  # one thread: sequential, BLAS on one thread too
            assert pool is None
            assert blas() == [1] * len(before)
        assert blas() == before
    finally:
        torch.set_num_threads(n_torch)
