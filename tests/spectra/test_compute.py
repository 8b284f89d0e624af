"""spectra/compute.py: one layer's blocks as tasks, the thread policy, the spectra policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specbound.errors import InputError
from specbound.spectra.compute import SpectraPolicy, layer_spectra
from specbound.weights.canonical import LayerWeights


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
    dense = layer_spectra(lw, SpectraPolicy(dense=True))
    for h in range(H):
        np.testing.assert_allclose(dense.qk[h].values[:d].numpy(), ls.qk[h].values.numpy(), rtol=1e-10)
        assert dense.qk[h].norm_21 == pytest.approx(ls.qk[h].norm_21, rel=1e-12)


@pytest.mark.parametrize("H,Hkv,dtype", [(4, 4, torch.float32), (4, 2, torch.float64), (6, 3, torch.bfloat16)])
def test_layer_spectra_tasks_equals_layer_spectra(H, Hkv, dtype):
    """The blocks run as threaded tasks on the layer as read give the sequential numbers on the
    upcast layer."""
    from concurrent.futures import ThreadPoolExecutor

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
        got = layer_spectra(lw, SpectraPolicy(), executor=ex)
    for k, t in before.items():  # the caller's tensors are never modified (abs in place on copies only)
        assert torch.equal(getattr(lw, k), t), k
    assert got.layer == 2 and got.names == {"W_Q": "q"}
    for a, b in [*zip(ref.qk, got.qk), *zip(ref.ov, got.ov), (ref.m_in, got.m_in), (ref.m_out, got.m_out)]:
        assert torch.equal(a.values, b.values)
        assert (a.rows, a.cols, a.norm_21, a.method) == (b.rows, b.cols, b.norm_21, b.method)
    assert got.weight_norms == ref.weight_norms


def test_task_threads_limit_numpy_blas_and_restore_it():
    """Inside task_threads numpy's BLAS runs on n // w threads (one per task on 2 threads); the
    process settings (torch threads, BLAS threads) are back afterwards."""
    from threadpoolctl import threadpool_info

    from specbound.spectra.compute import INLINE, MAX_TASKS, task_threads

    def blas() -> list[int]:
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    before = blas()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can control is loaded by numpy here")
    n_torch = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with task_threads(torch.device("cpu")) as pool:
            assert pool is not INLINE
            assert blas() == [max(1, 2 // min(2, MAX_TASKS))] * len(before)
            assert torch.get_num_threads() == 1
        assert blas() == before and torch.get_num_threads() == 2
        torch.set_num_threads(1)
        with task_threads(torch.device("cpu")) as pool:  # one thread: sequential, BLAS on one thread too
            assert pool is INLINE
            assert blas() == [1] * len(before)
        assert blas() == before
    finally:
        torch.set_num_threads(n_torch)


@pytest.mark.parametrize("kw,match", [
    ({"dtype": "float16"}, "dtype"), ({"device": "tpu"}, "device"), ({"ff_method": "qr"}, "ff_method"),
    ({"dense": True, "approx": True}, "exclude"),
])
def test_policy_refuses_bad_options(kw, match):
    with pytest.raises(InputError, match=match):
        SpectraPolicy.of(**kw)


def test_policy_is_frozen_and_reports_itself():
    p = SpectraPolicy.of(dtype="float32", approx=True)
    assert p.torch_dtype == torch.float32 and p.approx is not None
    assert p.to_dict()["dtype"] == "float32" and p.to_dict()["approx"]["probes"] == p.approx.probes
    with pytest.raises(AttributeError):
        p.dense = True  # type: ignore[misc]
