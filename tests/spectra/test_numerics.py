"""Numerics of the spectra (issues 17 and 18): no overflow of any finite value (scaled norms and
Grams), homogeneity under a huge scale, the numerical rank in the working precision, the
float32 range error, and the gated M_in as blocks (never concatenated) against the float64
concatenation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from builders import make_model, transform

import specbound
from specbound.errors import InputError
from specbound.measures import MatrixTable
from specbound.spectra import blocks as blocks_mod
from specbound.spectra.blocks import Dense, FactoredProduct, blocks_of
from specbound.spectra.compute import SpectraPolicy, compute_spectra
from specbound.weights.canonical import LayerWeights, ModelInfo, TransformerWeights

LN_C = math.log(1e300)


def _scaled(tw: TransformerWeights, c_att: float, c_ff: float) -> TransformerWeights:
    return transform(tw, lambda lw: LayerWeights(
        lw.index, W_Q=lw.W_Q * c_att, W_K=lw.W_K, W_V=lw.W_V * c_att, W_O=lw.W_O, M_in=lw.M_in * c_ff,
        M_out=lw.M_out * c_ff))


def test_one_entry_at_1e300_gives_finite_norms_and_json() -> None:
    """A float64 checkpoint with one entry at 1e300: σ_1, ‖·‖_F and ‖·‖_{2,1} are finite (their
    sums of squares are not), the report serialises without NaN/inf, and no spectral norm is NaN."""
    tw = make_model(L=2, N=12, H=3, F=10, seed=4)

    def poke(lw: LayerWeights) -> LayerWeights:
        M = lw.M_in.clone()
        if lw.index == 0:
            M[2, 3] = 1e300
        return LayerWeights(lw.index, lw.W_Q, lw.W_K, lw.W_V, lw.W_O, M, lw.M_out)

    rep = specbound.analyze(transform(tw, poke), bounds=["spectrum_adaptive", "edelman"])
    row = rep.table.frame.query("layer == 0 and kind == 'M_in'").iloc[0]
    assert row["spectral_norm"] == pytest.approx(1e300, rel=1e-12)
    assert row["frobenius"] == pytest.approx(1e300, rel=1e-12) and row["norm_21"] == pytest.approx(1e300, rel=1e-12)
    assert row["ln_fro2"] == pytest.approx(2 * LN_C, abs=1e-9)
    c2 = rep.model_spectra.spectral_norms()
    assert all(np.isfinite(v).all() for v in c2.values())
    from specbound.report.io import report_json

    json.loads(report_json(rep))  # allow_nan=False: raises on any NaN or inf


def test_homogeneity_under_1e300() -> None:
    """W·1e300 (float64): every spectrum is that of W times 1e300 to 1e-12 relative, and every
    log-measure shifts by exactly ln(1e300) times its degree (attention factors W_Q, W_V scaled
    by 1e300 so that QK, OV and VO scale by 1e300; M_in, M_out by 1e300)."""
    tw = make_model(L=2, N=16, H=4, Hkv=2, dh=4, F=24, seed=5)
    big = _scaled(tw, 1e300, 1e300)
    for policy in (SpectraPolicy(), SpectraPolicy(dense=True), SpectraPolicy(ff_method="svd")):
        a, b = compute_spectra(tw, policy), compute_spectra(big, policy)
        for (_, _, _, x), (_, _, _, y) in zip(a.matrices(), b.matrices()):
            assert torch.isfinite(y.values).all()
            torch.testing.assert_close(y.values / 1e300, x.values, rtol=1e-12, atol=1e-12 * float(x.values[0]))
            assert y.norm_21 / 1e300 == pytest.approx(x.norm_21, rel=1e-12)
        for la, lb in zip(a.layers, b.layers):
            assert lb.vo.spectral_norm / 1e300 == pytest.approx(la.vo.spectral_norm, rel=1e-12)
            assert lb.vo.frobenius / 1e300 == pytest.approx(la.vo.frobenius, rel=1e-12)
        ta, tb = MatrixTable.build(a, l_phi=1.0), MatrixTable.build(b, l_phi=1.0)
        fa, fb = ta.frame, tb.frame
        assert (fa["rank"] == fb["rank"]).all()
        # degree in the scale c = 1e300: ln C_2, ln ‖·‖_{2,1}, ln ‖·‖_{1,1} 1; ln ‖·‖_F² 2; ln γ*: QK 3, OV 2, M_in 1
        for col, deg in (("ln_spec", 1), ("ln_21", 1), ("ln_fro2", 2), ("ln_l11", 1)):
            np.testing.assert_allclose(fb[col] - fa[col], deg * LN_C, rtol=0, atol=1e-9, err_msg=col)
        gamma_deg = fa["kind"].map({"QK": 3, "OV": 2, "M_in": 1, "M_out": 0}).to_numpy()
        np.testing.assert_allclose(fb["ln_gamma"] - fa["ln_gamma"], gamma_deg * LN_C, rtol=0, atol=1e-9)
        assert np.isfinite(fb["ln_alpha"]).all()
        for col in ("ln_spec", "ln_fro2", "ln_21"):
            np.testing.assert_allclose(tb.links[col] - ta.links[col], (2 if col == "ln_fro2" else 1) * LN_C,
                                       rtol=0, atol=1e-9, err_msg=col)


def test_tiny_weights_do_not_underflow() -> None:
    """Weights at 1e-200 (their squares underflow to 0 unscaled): the spectra scale exactly."""
    tw = make_model(L=1, N=12, H=3, F=10, seed=6)
    small = _scaled(tw, 1e-150, 1e-200)
    a, b = compute_spectra(tw), compute_spectra(small)
    for (_, _, k, x), (_, _, _, y) in zip(a.matrices(), b.matrices()):
        c = 1e-150 if k in ("QK", "OV") else 1e-200
        torch.testing.assert_close(y.values / c, x.values, rtol=1e-12, atol=1e-12 * float(x.values[0]))


def test_float32_range() -> None:
    """float32 on 1e20 weights: a feed-forward matrix (σ ≈ 1e21) is analysed to float32 accuracy;
    a QK product of two 1e20 factors (σ ≈ 1e41 > 3.4e38) is a one-line error naming the tensors
    and suggesting --dtype float64; so is a float64-stored weight beyond float32's range."""
    g = torch.Generator().manual_seed(7)
    M = torch.randn(12, 30, generator=g, dtype=torch.float32) * 1e20
    got = Dense("m_in", "M_in", M, "layer 0: up.weight").compute(SpectraPolicy(dtype="float32")).spectra[0]
    ref = torch.linalg.svdvals(M.double())
    torch.testing.assert_close(got.values.double(), ref, rtol=1e-5, atol=0)
    A = torch.randn(2, 12, 4, generator=g, dtype=torch.float32) * 1e20
    qk = FactoredProduct("qk", "QK", A, A.clone(), None, None, False, ("W_Q", "W_K"), "layer 0: q.weight · k.weight")
    with pytest.raises(InputError, match=r"^layer 0: q\.weight · k\.weight: .*float32.*--dtype float64\.$"):
        qk.compute(SpectraPolicy(dtype="float32"))
    huge = Dense("m_in", "M_in", M.double() * 1e200, "layer 0: up.weight")
    with pytest.raises(InputError, match=r"^layer 0: up\.weight has entries up to .*--dtype float64\.$"):
        huge.compute(SpectraPolicy(dtype="float32"))


def _low_rank_model(r: int, dtype: torch.dtype) -> TransformerWeights:
    """One layer, N = 64, 2 heads of width 32: QK[h] and OV[h] of rank exactly r (factors
    ``U C`` with U ``[N, r]``), M_in, M_out products of random N×r and r×F factors (rank r)."""
    g = torch.Generator().manual_seed(8)
    N, H, dh, F = 64, 2, 32, 96

    def rnd(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g, dtype=torch.float64)

    def rank_r(*s: int) -> torch.Tensor:  # [H, N, dh] with rank-r heads
        return torch.stack([rnd(s[1], r) @ rnd(r, s[2]) for _ in range(s[0])])

    lw = LayerWeights(0, W_Q=rank_r(H, N, dh).to(dtype), W_K=rnd(H, N, dh).to(dtype), W_V=rank_r(H, N, dh).to(dtype),
                      W_O=rnd(H, dh, N).to(dtype), M_in=(rnd(N, r) @ rnd(r, F)).to(dtype),
                      M_out=(rnd(F, r) @ rnd(r, N)).to(dtype))
    return TransformerWeights.from_layers(ModelInfo("test", 1, N, H, H, dh, F, source="test"), [lw])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rank_of_a_known_rank_head_in_every_route(dtype: str) -> None:
    """Heads and feed-forward matrices of rank exactly r = 5 get rank 5: float32 and float64,
    factored and dense products, Gram (forced and auto) and SVD feed-forward routes. (With
    float64's 1e-10 threshold, float32's rounding noise counted as rank: 39–42 for width 32.)"""
    r = 5
    tw = _low_rank_model(r, getattr(torch, dtype))
    for policy in (SpectraPolicy(dtype=dtype), SpectraPolicy(dtype=dtype, dense=True),
                   SpectraPolicy(dtype=dtype, ff_method="gram"), SpectraPolicy(dtype=dtype, ff_method="svd")):
        ms = compute_spectra(tw, policy)
        frame = MatrixTable.build(ms, l_phi=1.0).frame
        assert (frame["rank"] == r).all(), (policy, frame[["kind", "rank", "method"]].to_dict("records"))
        if policy.ff_method == "gram":
            assert set(frame.loc[frame["kind"].isin(["M_in", "M_out"]), "method"]) == {"gram"}


def test_rank_threshold_rule() -> None:
    """float64: bounds.md §3's 1e-10 · r · max(σ_1, 1) exactly; float32: ε₃₂ · r · max(σ_1, 1)."""
    from specbound.measures import numerical_rank

    s = np.array([10.0, 1e-7, 5e-9, 1e-12])
    assert numerical_rank(s, 4) == 3  # 1e-10 · 4 · 10 = 4e-9
    eps32 = float(np.finfo(np.float32).eps)
    assert numerical_rank(s, 4, eps32) == 1  # 1.19e-7 · 4 · 10 = 4.8e-6
    assert numerical_rank(np.array([10.0, 1e-5]), 4, eps32) == 2


def _gated_layer():
    from builders import build

    from specbound.weights.adapters import open_weights

    m = build("llama", seed=2)
    return open_weights(m.state_dict(), config=m.config.to_dict()).layer(0)


def test_llama_adapter_keeps_gate_and_up_apart() -> None:
    lw = _gated_layer()
    assert len(lw.M_in_parts) == 2 and lw.gated
    assert lw.__dict__["_M_in"] is None  # never concatenated by the adapter
    assert lw.M_in.shape == lw.m_in_shape() == (lw.M_in_parts[0].shape[0], 2 * lw.M_in_parts[0].shape[1])


@pytest.mark.parametrize("adapter", ["llama", "custom"])
@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gated_m_in_blocks_against_the_float64_concatenation(adapter, blocked, dtype, monkeypatch) -> None:
    """The gated M_in given as (gate, up) blocks: eigenvalues, ‖·‖_{2,1} and ‖·‖_{1,1} equal those of
    the float64 concatenation [gate | up] to 1e-12 relative, with the Gram accumulated whole or
    block by block (a tiny block size: several blocks per part), in both working dtypes."""
    from builders import H, L, N, build

    from specbound.weights.adapters import open_weights

    m = build("llama", seed=3)
    sd = {k: v.to(torch.bfloat16) for k, v in m.state_dict().items()}
    if adapter == "llama":
        lw = open_weights(sd, config=m.config.to_dict()).layer(1)
    else:
        mapping = {"L": L, "N": N, "H": H, "H_kv": 2, "activation": "silu", "model_type": "my-llama",
                   "Q": "layers.{i}.self_attn.q_proj.weight", "K": "layers.{i}.self_attn.k_proj.weight",
                   "V": "layers.{i}.self_attn.v_proj.weight", "O": "layers.{i}.self_attn.o_proj.weight",
                   "M_in": ["layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.up_proj.weight"],
                   "M_out": "layers.{i}.mlp.down_proj.weight"}
        lw = open_weights(sd, mapping=mapping).layer(1)
    assert len(lw.M_in_parts) == 2 and lw.M_in_parts[0].dtype == torch.bfloat16
    if blocked:
        monkeypatch.setattr(blocks_mod, "FULL_UPCAST_BYTES", 0)
        monkeypatch.setattr(blocks_mod, "BLOCK_BYTES", 8 * N * 8)  # 8 columns per block
    policy = SpectraPolicy(dtype=dtype, ff_method="gram")
    res = blocks_of(lw)["m_in"].compute(policy)
    cat = torch.cat([p.double() for p in lw.M_in_parts], dim=1)
    ref = Dense("m_in", "M_in", cat).compute(SpectraPolicy(ff_method="gram"))
    got, want = res.spectra[0], ref.spectra[0]
    tol = 1e-12 if dtype == "float64" else 1e-6  # float32: the values and (unblocked) norms are float32
    torch.testing.assert_close(got.values.double(), want.values, rtol=tol, atol=0)
    assert got.norm_21 == pytest.approx(want.norm_21, rel=tol)
    assert res.l1["M_in"][0] == pytest.approx(ref.l1["M_in"][0], rel=1e-12)
    assert got.values.dtype == getattr(torch, dtype) and got.method == "gram"
    assert (got.rows, got.cols) == tuple(cat.shape)
