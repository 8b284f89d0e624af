"""spectra/blocks.py: the blocks of a layer against formed products, and differences to a reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specbound.errors import InputError
from specbound.spectra.blocks import Dense, FactoredProduct, ValuePath, blocks_of, difference_blocks
from specbound.spectra.kernels import LANCZOS_MIN, top_singular_value
from specbound.spectra.compute import SpectraPolicy

from builders import formed, make_model


def _sv(A: np.ndarray) -> np.ndarray:
    return np.linalg.svd(A, compute_uv=False)


@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("dense", [False, True])
def test_blocks_are_the_products_and_feed_forward_matrices(H, Hkv, dense):
    tw = make_model(L=1, N=9, H=H, Hkv=Hkv, dh=3, F=7, seed=H + Hkv)
    lw, want = tw.layer(0), formed(tw)[0]
    blocks = blocks_of(lw)
    assert {k: type(b) for k, b in blocks.items()} == {"qk": FactoredProduct, "ov": FactoredProduct,
                                                       "m_in": Dense, "m_out": Dense, "vo": ValuePath}
    policy = SpectraPolicy(dense=dense)
    for name, kind in (("qk", "QK"), ("ov", "OV"), ("m_in", "M_in"), ("m_out", "M_out")):
        res = blocks[name].compute(policy)
        assert len(res.spectra) == len(want[kind])
        for spec, A in zip(res.spectra, want[kind]):
            s = _sv(A)
            k = spec.values.numel()
            np.testing.assert_allclose(spec.values.numpy(), s[:k], rtol=1e-10, atol=1e-12 * s[0])
            assert np.abs(s[k:]).max(initial=0.0) <= 1e-12 * s[0]  # what is not listed is zero
            assert spec.norm_21 == pytest.approx(np.linalg.norm(A, axis=0).sum(), rel=1e-12)
            assert (spec.rows, spec.cols) == A.shape
            if kind in ("QK", "OV"):
                assert spec.method == ("dense" if dense else "factored")
            else:
                assert spec.method in (("svd",) if dense else ("gram", "svd"))


def test_factor_l1_norms_are_per_stored_head():
    tw = make_model(L=1, H=4, Hkv=2, seed=3)
    lw = tw.layer(0)
    l1 = {}
    for b in blocks_of(lw).values():
        got = b.compute(SpectraPolicy()).l1
        assert got == b.l1(SpectraPolicy())  # the cached-block route gives the same sums
        l1.update(got)
    for k in ("W_Q", "W_K", "W_V", "W_O"):
        t = getattr(lw, k)
        assert l1[k] == pytest.approx(t.abs().sum(dim=(1, 2)).tolist(), rel=1e-14)
        assert len(l1[k]) == t.shape[0]  # K and V once per key/value head
    assert l1["M_in"] == pytest.approx([float(lw.M_in.abs().sum())], rel=1e-14)


@pytest.mark.parametrize("H,Hkv", [(3, 3), (4, 2)])
def test_difference_blocks_are_the_formed_differences(H, Hkv):
    tw, tw0 = make_model(L=1, H=H, Hkv=Hkv, seed=1), make_model(L=1, H=H, Hkv=Hkv, seed=2)
    m, m0 = formed(tw)[0], formed(tw0)[0]
    diff = difference_blocks(tw.layer(0), tw0.layer(0))
    assert diff["qk"].width == 2 * tw.info.d_head and diff["qk"].n_heads == H
    for name, kind in (("qk", "QK"), ("ov", "OV"), ("m_in", "M_in"), ("m_out", "M_out")):
        for spec, A, A0 in zip(diff[name].compute(SpectraPolicy()).spectra, m[kind], m0[kind]):
            s = _sv(A - A0)
            k = spec.values.numel()
            np.testing.assert_allclose(spec.values.numpy(), s[:k], rtol=1e-9, atol=1e-12 * s[0])
            assert spec.norm_21 == pytest.approx(np.linalg.norm(A - A0, axis=0).sum(), rel=1e-9)


def test_unchanged_heads_have_exactly_zero_distance():
    """Head 0 of the reference equals the model's (QK and OV factors): its distance is 0 exactly,
    not rounding noise; the other heads (and their group mates' K/V) are untouched."""
    tw, other = make_model(L=1, H=4, Hkv=2, seed=1), make_model(L=1, H=4, Hkv=2, seed=5)
    lw, lw0 = tw.layer(0), other.layer(0)
    for k in ("W_Q", "W_O"):
        getattr(lw0, k)[0] = getattr(lw, k)[0]
    for k in ("W_K", "W_V"):  # KV head 0 serves query heads 0 and 1
        getattr(lw0, k)[0] = getattr(lw, k)[0]
    diff = difference_blocks(lw, lw0)
    for name in ("qk", "ov"):
        specs = diff[name].compute(SpectraPolicy()).spectra
        assert float(specs[0].values.abs().max()) == 0.0 and specs[0].norm_21 == 0.0
        assert all(float(s.values[0]) > 0 for s in specs[1:])  # head 1 shares KV head 0 but moved


def test_difference_of_half_precision_weights_is_taken_in_float64():
    a = Dense("m_in", "M_in", torch.randn(6, 5).to(torch.bfloat16))
    b = Dense("m_in", "M_in", torch.randn(6, 5).to(torch.bfloat16))
    d = a - b
    assert d.M.dtype == torch.float64
    torch.testing.assert_close(d.M, a.M.double() - b.M.double(), rtol=0, atol=0)


def test_difference_with_another_shape_names_the_option():
    tw, tw0 = make_model(L=1, F=10), make_model(L=1, F=12)
    with pytest.raises(InputError, match="--init.*M_in"):
        difference_blocks(tw.layer(0), tw0.layer(0))
    q = blocks_of(tw.layer(0))["qk"]
    q0 = blocks_of(make_model(L=1, dh=5).layer(0))["qk"]
    with pytest.raises(InputError, match="--init.*QK"):
        q - q0


def _value_path(tw, i=0):
    """VO[i] = Σ_h W_V[g(h)] W_O[h], formed."""
    return sum(formed(tw)[i]["OV"])


@pytest.mark.parametrize("H,Hkv,dh,N", [(3, 3, 4, 12), (4, 2, 4, 12), (8, 4, 12, 80)])
@pytest.mark.parametrize("dense", [False, True])
def test_value_path_link_against_the_formed_sum_of_heads(H, Hkv, dh, N, dense):
    """σ_1, ‖·‖_F², ‖·‖_{2,1} of VO = W_V W_O (all heads in one N × N link); the last shape has
    k = H·d_h = 96 > LANCZOS_MIN columns, so σ_1 goes through Lanczos."""
    tw = make_model(L=1, N=N, H=H, Hkv=Hkv, dh=dh, F=7, seed=H)
    VO = _value_path(tw)
    (link,) = blocks_of(tw.layer(0))["vo"].compute(SpectraPolicy(dense=dense)).spectra
    assert link.spectral_norm == pytest.approx(_sv(VO)[0], rel=1e-12)
    assert link.frobenius**2 == pytest.approx(float((VO * VO).sum()), rel=1e-12)
    assert link.norm_21 == pytest.approx(np.linalg.norm(VO, axis=0).sum(), rel=1e-12)
    assert (link.rows, link.cols, link.method) == (N, N, "dense" if dense else "factored")


def test_value_path_difference_is_the_difference_of_the_sums():
    tw, tw0 = make_model(L=1, H=4, Hkv=2, seed=1), make_model(L=1, H=4, Hkv=2, seed=2)
    D = _value_path(tw) - _value_path(tw0)
    (link,) = difference_blocks(tw.layer(0), tw0.layer(0))["vo"].compute(SpectraPolicy()).spectra
    assert link.spectral_norm == pytest.approx(_sv(D)[0], rel=1e-10)
    assert link.frobenius**2 == pytest.approx(float((D * D).sum()), rel=1e-10)
    assert link.norm_21 == pytest.approx(np.linalg.norm(D, axis=0).sum(), rel=1e-10)
    (same,) = difference_blocks(tw.layer(0), tw.layer(0))["vo"].compute(SpectraPolicy()).spectra
    assert (same.spectral_norm, same.frobenius, same.norm_21) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("shape", [(30, 5), (200, LANCZOS_MIN + 1), (150, 300)])
def test_top_singular_value_both_routes(shape):
    g = torch.Generator().manual_seed(sum(shape))
    M = torch.randn(*shape, generator=g, dtype=torch.float64) @ torch.diag(torch.logspace(0, -3, shape[1], dtype=torch.float64))
    assert top_singular_value(M) == pytest.approx(float(torch.linalg.svdvals(M)[0]), rel=1e-12)
    assert top_singular_value(torch.zeros(4, 0, dtype=torch.float64)) == 0.0
