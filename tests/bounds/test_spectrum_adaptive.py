"""The spectrum-adaptive and Edelman proxies: hand-derived values, a brute-force reference on
formed matrices, invariances, homogeneity, overflow and zero matrices."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import specbound
from specbound.bounds.spectrum_adaptive import default_grid_m, ln_term_curve, p_grid
from specbound.weights.canonical import LayerWeights, TransformerWeights

from builders import make_model, transform


# ---------------------------------------------------------------- reference implementation
def reference(tw: TransformerWeights, l_phi=1.13, m=None):
    """B_SA and B_E straight from bounds.md §4–5 on formed matrices (numpy SVD, linear space)."""
    info = tw.info
    L, N, H = info.n_layers, info.d_model, info.n_heads
    grp = H // info.n_kv_heads
    mats = []  # per layer: dict kind -> list of np matrices
    for i in range(L):
        lw = tw.layer(i)
        qk = [(lw.W_Q[h] @ lw.W_K[h // grp].T).numpy() for h in range(H)]
        ov = [(lw.W_V[h // grp] @ lw.W_O[h]).numpy() for h in range(H)]
        mats.append({"QK": qk, "OV": ov, "M_in": [lw.M_in.numpy()], "M_out": [lw.M_out.numpy()]})

    def sv(A, kind):
        s = np.linalg.svd(A, compute_uv=False)
        if kind in ("QK", "OV"):
            s[info.d_head:] = 0.0  # exact zeros past the head's rank
        return s

    c2 = lambda A: np.linalg.svd(A, compute_uv=False)[0]  # noqa: E731
    factor = [l_phi * c2(d["M_in"][0]) * c2(d["M_out"][0]) * sum(c2(o) * (1 + 4 * c2(q)) for q, o in zip(d["QK"], d["OV"])) for d in mats]
    alpha = [float(np.prod(factor[ell + 1:])) for ell in range(L)]
    m = m or math.ceil(L + math.log(N))
    grid = [k / m for k in range(2 * m + 1)]
    total = math.sqrt(L)
    pstars = []
    for ell, d in enumerate(mats):
        cin, cout = c2(d["M_in"][0]), c2(d["M_out"][0])
        for kind, As in d.items():
            for h, A in enumerate(As):
                gamma = {"QK": lambda: 2 * c2(d["OV"][h]) * cout * cin, "OV": lambda: cout * cin,
                         "M_in": lambda: cout, "M_out": lambda: 1.0}[kind]()
                c = gamma * alpha[ell] * L
                s = sv(A, kind)
                r = min(A.shape)
                rank = int((s > 1e-10 * r * max(s[0], 1)).sum())
                Ts = [math.sqrt(N * rank) if p == 0 else (np.sum(s[s > 0] ** p)) ** (1 / (p + 2)) * c ** (p / (p + 2)) * N ** ((p + 1) / (p + 2)) for p in grid]
                k = int(np.argmin(Ts))
                pstars.append(grid[k])
                total += Ts[k]
    xi = []
    for ell, d in enumerate(mats):
        cin, cout = c2(d["M_in"][0]), c2(d["M_out"][0])
        n21 = lambda A: np.linalg.norm(A, axis=0).sum()  # noqa: E731
        x = sum((cout * cin * c2(o) * n21(q)) ** (2 / 3) + (cout * cin * n21(o)) ** (2 / 3) for q, o in zip(d["QK"], d["OV"]))
        x += (cout * n21(d["M_in"][0])) ** (2 / 3) + n21(d["M_out"][0]) ** (2 / 3)
        xi.append(x)
    be = (1 + sum(a ** (2 / 3) * x for a, x in zip(alpha, xi))) ** 1.5
    return total, be, alpha, pstars


@pytest.mark.parametrize("kw", [dict(), dict(H=4, Hkv=2), dict(L=3, scale=0.3), dict(L=1, N=8, dh=8, H=1, Hkv=1)])
@pytest.mark.parametrize("l_phi", [1.0, 1.13])
def test_against_brute_force_reference(kw, l_phi):
    tw = make_model(**kw)
    rep = specbound.analyze(tw, l_phi=l_phi)
    b_sa, b_e, alpha, pstars = reference(tw, l_phi=l_phi)
    assert rep.bounds["spectrum_adaptive"].value == pytest.approx(b_sa, rel=1e-9)
    assert rep.bounds["edelman"].value == pytest.approx(b_e, rel=1e-9)
    got_alpha = rep.matrices.groupby("layer")["alpha"].first().to_numpy(dtype=float)
    np.testing.assert_allclose(got_alpha, alpha, rtol=1e-9)
    np.testing.assert_allclose(rep.matrices["p_star"].to_numpy(), pstars)


def test_dense_procedure_agrees_with_factored():
    tw = make_model(L=2, N=16, H=4, Hkv=4, dh=4, F=12, seed=3)
    fac, den = specbound.analyze(tw), specbound.analyze(tw, dense=True)
    assert den.bounds["edelman"].value == pytest.approx(fac.bounds["edelman"].value, rel=1e-9)
    assert (den.matrices["method"].isin(["dense", "svd"])).all()
    s_dense = den.spectra(0, 1, "QK")
    s_fac = fac.spectra(0, 1, "QK")
    np.testing.assert_allclose(s_dense[:4], s_fac[:4], rtol=1e-10)
    assert (s_fac[4:] == 0).all() and s_fac.size == 16
    assert np.abs(s_dense[4:]).max() < 1e-12 * s_dense[0]  # noise, not zeros
    assert (den.matrices["rank"] == fac.matrices["rank"]).all()


# ---------------------------------------------------------------- hand-derived T(p)
def test_exact_rank_gives_sqrt_N_r():
    N = 50
    for r in (1, 7, 50):
        s = np.r_[np.linspace(5, 1, r), np.zeros(N - r)]
        curve = ln_term_curve(s, N, ln_c=3.0, N=N, grid=p_grid(4))
        assert math.exp(curve[0]) == pytest.approx(math.sqrt(N * r), rel=1e-12)


def test_flat_spectrum_closed_form_and_p_star_at_the_ends():
    """σ_i = σ (k values): ln T(p) = (ln(kN) + p·ln(σcN)) / (p+2), monotone in p with the sign of
    2·ln(σcN) − ln(kN); so p* = 0 when σcN > sqrt(kN) and p* = 2 when σcN < sqrt(kN)."""
    N, k, m = 64, 8, 6
    grid = p_grid(m)
    for delta, expected in ((+0.2, 0.0), (-0.2, 2.0)):
        sigma = 0.5
        ln_c = 0.5 * math.log(k * N) + delta - math.log(sigma * N)
        s = np.full(k, sigma)
        curve = ln_term_curve(s, N, ln_c, N, grid)
        closed = [(math.log(k * N) + p * (math.log(sigma * N) + ln_c)) / (p + 2) for p in grid]
        closed[0] = 0.5 * math.log(N * k)
        np.testing.assert_allclose(curve, closed, rtol=1e-12)
        assert float(grid[int(np.argmin(curve))]) == expected


def test_grid():
    assert default_grid_m(6, 384) == math.ceil(6 + math.log(384)) == 12
    g = p_grid(12)
    assert g[0] == 0 and g[-1] == 2 and g.size == 25 and g[1] == pytest.approx(1 / 12)
    rep = specbound.analyze(make_model(), grid_m=5)
    assert set(np.round(rep.matrices["p_star"] * 5, 9)).issubset(set(range(11)))
    assert rep.options["grid_m"] == 5


# ---------------------------------------------------------------- invariances, homogeneity
def test_residual_rotation_leaves_spectra_and_B_SA_unchanged():
    tw = make_model(seed=4)
    N = tw.info.d_model
    P, _ = torch.linalg.qr(torch.randn(N, N, generator=torch.Generator().manual_seed(9), dtype=torch.float64))

    def rot(lw: LayerWeights) -> LayerWeights:
        return LayerWeights(lw.index, W_Q=P.T @ lw.W_Q, W_K=P.T @ lw.W_K, W_V=P.T @ lw.W_V, W_O=lw.W_O @ P,
                            M_in=P.T @ lw.M_in, M_out=lw.M_out @ P)

    a, b = specbound.analyze(tw), specbound.analyze(transform(tw, rot))
    assert b.bounds["spectrum_adaptive"].log10_value == pytest.approx(a.bounds["spectrum_adaptive"].log10_value, rel=1e-12)
    for col in ("spectral_norm", "frobenius", "nuclear", "stable_rank", "effective_rank", "p_star"):
        np.testing.assert_allclose(b.matrices[col].to_numpy(), a.matrices[col].to_numpy(), rtol=1e-9)


def test_head_space_rotation_leaves_both_proxies_unchanged():
    """W_Q U, W_K U and W_V U, Uᵀ W_O leave every QK and OV unchanged, so both proxies are too
    (a check that ‖QK‖_{2,1} and ‖OV‖_{2,1} really depend on the products only)."""
    tw = make_model(seed=5)
    d = tw.info.d_head
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    S = torch.diag(torch.tensor([2.0, 0.5, 3.0, 1.0], dtype=torch.float64))  # not orthogonal: Q S, K S^-1

    def rot(lw: LayerWeights) -> LayerWeights:
        return LayerWeights(lw.index, W_Q=lw.W_Q @ U @ S, W_K=lw.W_K @ U @ torch.linalg.inv(S), W_V=lw.W_V @ U,
                            W_O=U.T @ lw.W_O, M_in=lw.M_in, M_out=lw.M_out)

    a, b = specbound.analyze(tw), specbound.analyze(transform(tw, rot))
    for name in ("spectrum_adaptive", "edelman"):
        assert b.bounds[name].log10_value == pytest.approx(a.bounds[name].log10_value, rel=1e-11)


def test_homogeneity_in_M_out_for_one_layer():
    """L = 1 (α = 1): scaling M_out by c multiplies every T(A; p) by c^{p/(p+2)} and every ξ
    summand by c^{2/3}, so B_E^{2/3} − 1 scales by c^{2/3}."""
    tw = make_model(L=1, seed=6)
    c = 3.7
    scaled = transform(tw, lambda lw: LayerWeights(lw.index, lw.W_Q, lw.W_K, lw.W_V, lw.W_O, lw.M_in, c * lw.M_out))
    a, b = specbound.analyze(tw), specbound.analyze(scaled)
    be_a, be_b = a.bounds["edelman"].value, b.bounds["edelman"].value
    assert be_b ** (2 / 3) - 1 == pytest.approx(c ** (2 / 3) * (be_a ** (2 / 3) - 1), rel=1e-10)
    grid = p_grid(a.options["grid_m"])
    for kind, head in (("QK", 0), ("OV", 2), ("M_in", -1), ("M_out", -1)):
        _, ta = a.term_curve(0, head, kind)
        _, tb = b.term_curve(0, head, kind)
        np.testing.assert_allclose(tb - ta, grid / (grid + 2) * math.log10(c), atol=1e-10)


# ---------------------------------------------------------------- numerics and edge cases
def test_deep_model_overflow_is_reported_in_log_space():
    tw = make_model(L=60, N=8, H=2, Hkv=2, dh=4, F=8, seed=7, scale=3.0)
    rep = specbound.analyze(tw)
    be, sa = rep.bounds["edelman"], rep.bounds["spectrum_adaptive"]
    assert math.isfinite(be.log10_value) and be.log10_value > 308 and be.value is None
    # the adaptive index escapes the exponential α (p* = 0 where α is huge): B_SA stays a float
    assert sa.value is not None and math.isfinite(sa.value)
    assert rep.matrices["alpha"].isna().any()  # α[0] overflows float64…
    assert rep.matrices["log10_alpha"].notna().all()  # …its log10 does not
    doc = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert doc["bounds"]["edelman"]["value"] is None
    # α is non-increasing with the layer when every layer's factor is ≥ 1
    la = rep.matrices.groupby("layer")["log10_alpha"].first().to_numpy(dtype=float)
    assert (np.diff(la) <= 0).all() and la[-1] == 0.0


def test_zero_head_and_zero_feedforward_are_valid():
    tw = make_model(seed=8)

    def zero(lw: LayerWeights) -> LayerWeights:
        W_Q = lw.W_Q.clone()
        if lw.index == 0:
            W_Q[1] = 0.0
        M_in = torch.zeros_like(lw.M_in) if lw.index == 1 else lw.M_in
        return LayerWeights(lw.index, W_Q, lw.W_K, lw.W_V, lw.W_O, M_in, lw.M_out)

    rep = specbound.analyze(transform(tw, zero))
    m = rep.matrices
    z = m[(m["layer"] == 0) & (m["head"] == 1) & (m["kind"] == "QK")].iloc[0]
    assert z["rank"] == 0 and z["term"] == 0.0 and z["spectral_norm"] == 0.0
    assert math.isfinite(rep.bounds["spectrum_adaptive"].log10_value)
    assert math.isfinite(rep.bounds["edelman"].log10_value)
    json.dumps(rep.to_dict(), allow_nan=False)
    b_sa, b_e, _, _ = reference(transform(tw, zero))
    assert rep.bounds["spectrum_adaptive"].value == pytest.approx(b_sa, rel=1e-9)
    assert rep.bounds["edelman"].value == pytest.approx(b_e, rel=1e-9)


def test_float32_option_is_close_to_float64():
    tw = make_model(seed=10)
    a, b = specbound.analyze(tw), specbound.analyze(tw, dtype="float32")
    for name in ("spectrum_adaptive", "edelman"):
        assert b.bounds[name].log10_value == pytest.approx(a.bounds[name].log10_value, rel=1e-5)
    with pytest.raises(specbound.InputError, match="float16"):
        specbound.analyze(tw, dtype="float16")


def test_bad_options():
    tw = make_model()
    with pytest.raises(specbound.InputError, match="l_phi"):
        specbound.analyze(tw, l_phi=-1)
    with pytest.raises(specbound.InputError, match="grid_m"):
        specbound.analyze(tw, grid_m=0)
    with pytest.raises(specbound.InputError, match="unknown bound"):
        specbound.analyze(tw, bounds="nope")
    if not torch.cuda.is_available():
        with pytest.raises(specbound.InputError, match="cuda"):
            specbound.analyze(tw, device="cuda")


# ---------------------------------------------------------------- adaptivity (bounds.md §4)
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    k=st.integers(1, 12), N=st.integers(2, 600), m=st.integers(1, 12), seed=st.integers(0, 10_000),
    ln_c=st.floats(-30, 30), decay=st.floats(0.0, 6.0),
)
def test_margin_sign_is_p_star_off_zero(k, N, m, seed, ln_c, decay):
    """The closed form: margin = ln c − ln c_break < 0 exactly when the brute-force grid search
    finds p* > 0 (a margin within rounding of 0 is a tie and not tested)."""
    from specbound.bounds.spectrum_adaptive import ln_c_break

    rng = np.random.default_rng(seed)
    s = np.sort(np.exp(rng.normal(0.0, 1.0, k) - decay * np.arange(k)))[::-1]
    r = max(k, int(rng.integers(k, 2 * k + 1)))
    grid = p_grid(m)
    curve = ln_term_curve(s, r, ln_c, N, grid)
    p_star = grid[int(np.argmin(curve))]
    margin = ln_c - ln_c_break(s, r, N, grid)
    if abs(margin) > 1e-9 * max(1.0, abs(ln_c)):
        assert (margin < 0) == (p_star > 0), (margin, p_star)
    # and the brute force of the inequality: the largest ln c with some T(p) < T(0)
    brute = max(((p + 2) / p) * (0.5 * math.log(N * np.count_nonzero(s > 1e-10 * r * max(s[0], 1)))
                                  - ((p + 1) / (p + 2)) * math.log(N)) - math.log((s ** p).sum()) / p
                for p in grid[1:])
    assert ln_c_break(s, r, N, grid) == pytest.approx(brute, rel=1e-12, abs=1e-12)


def test_adaptivity_inactive_on_minilm_and_said_everywhere(minilm_report):
    r = minilm_report
    assert (r.matrices["p_star"] == 0).all()
    assert r.adaptivity["adaptivity"] == "inactive" and r.adaptivity["frac_p_star_zero"] == 1.0
    margins = r.matrices["log10_scale_margin"].to_numpy(dtype=float)
    assert (margins > 0).all()
    assert r.adaptivity["median_log10_scale_margin"] == pytest.approx(float(np.median(margins)), rel=1e-12)
    sa = r.bounds["spectrum_adaptive"]
    assert any(n.startswith("adaptivity: inactive") for n in sa.notes)
    assert sa.params["frac_p_star_zero"] == 1.0
    # B_SA is then a count of the architecture: sum sqrt(N rank) + sqrt(L)
    want = float(np.sqrt(384 * r.matrices["rank"].to_numpy(dtype=float)).sum()) + math.sqrt(6)
    assert sa.value == pytest.approx(want, rel=1e-12)
    doc = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert doc["adaptivity"]["adaptivity"] == "inactive"


def test_adaptivity_active_when_the_scale_is_small():
    rep = specbound.analyze(make_model(L=2, scale=0.05, seed=3), l_phi=1.0)
    m = rep.matrices
    assert rep.adaptivity["adaptivity"] == "active" and rep.adaptivity["frac_p_star_zero"] < 1.0
    margin = m["log10_scale_margin"].to_numpy(dtype=float)
    assert ((margin < 0) == (m["p_star"].to_numpy(dtype=float) > 0)).all()
    assert any(n.startswith("adaptivity: active") for n in rep.bounds["spectrum_adaptive"].notes)


def test_edelman_seq_len_refuses_T_below_2_without_a_name_error():
    """A sequence length below 2 is not applicable (ln ln T undefined), said as such."""
    from specbound.bounds import BoundInput, BoundParams, NotApplicable
    from specbound.bounds.edelman import EdelmanSeqLen
    from specbound.measures import MatrixTable
    from specbound.spectra.compute import compute_spectra

    ms = compute_spectra(make_model())
    inp = BoundInput(ms.info, MatrixTable.build(ms, l_phi=1.13), ms)
    with pytest.raises(NotApplicable, match="T >= 2"):
        EdelmanSeqLen().evaluate(inp, BoundParams(seq_len=1))
