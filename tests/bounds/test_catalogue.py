"""The bound catalogue (bounds.md §6-7): hand-derived values on a one-layer one-head model,
brute force on formed matrices (numpy), invariances and their absence, homogeneity degrees,
distances to a reference checkpoint (difference model), seq_len handling, user bounds
(register_bound and entry points)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import specbound
from specbound.bounds import available_bounds
from specbound.spectra.compute import compute_spectra
from specbound.errors import InputError
from specbound.report.io import report_json
from specbound.weights.canonical import LayerWeights, ModelInfo, TransformerWeights

from builders import formed, make_model, transform

CATALOGUE = {
    "spectrum_adaptive", "edelman", "edelman_seq_len", "trauger_tewari_l11", "trauger_tewari_proxy",
    "bartlett_spectral", "neyshabur_pac_bayes", "effective_rank", "log_prod_spec", "sum_fro",
    "fro_over_spec", "param_count",
}
MINE = sorted(CATALOGUE - {"spectrum_adaptive", "edelman"})
L_PHI = 1.13


def vals(rep) -> dict[str, float]:
    return {k: b.log10_value for k, b in rep.bounds.items()}


# ---------------------------------------------------------------- hand-derived, one layer one head
def tiny_model() -> TransformerWeights:
    """N = 2, d_h = 1, d_ff = 2: QK = diag(6, 0), OV = diag(5, 0), M_in = diag(4, 1), M_out = diag(3, 2)."""
    d = torch.float64
    lw = LayerWeights(
        0,
        W_Q=torch.tensor([[[2.0], [0.0]]], dtype=d), W_K=torch.tensor([[[-3.0], [0.0]]], dtype=d),
        W_V=torch.tensor([[[1.0], [0.0]]], dtype=d), W_O=torch.tensor([[[5.0, 0.0]]], dtype=d),
        M_in=torch.diag(torch.tensor([4.0, -1.0], dtype=d)), M_out=torch.diag(torch.tensor([3.0, 2.0], dtype=d)),
        extras={"layer.0.attention.self.query.bias": torch.tensor([1.0, -2.0]),
                "layer.0.attention.output.LayerNorm.weight": torch.tensor([1.0, 1.0])},
    )
    return TransformerWeights.from_layers(ModelInfo("test", 1, 2, 1, 1, 1, 2, source="tiny"), [lw])


def test_hand_derived_values_on_a_one_head_model():
    rep = specbound.analyze(tiny_model(), l_phi=L_PHI, seq_len=100)
    v = {k: b.value for k, b in rep.bounds.items()}
    # σ1: QK 6, OV 5, M_in 4, M_out 3; ‖·‖_F²: 36, 25, 17, 13; ‖·‖_{2,1}: 6, 5, 5, 5. The layer
    # chain has three links: VO = OV (one head), M_in, M_out; QK enters none of them.
    assert v["log_prod_spec"] == pytest.approx(25 * 16 * 9, rel=1e-12)
    assert v["sum_fro"] == pytest.approx(3 * (25 * 17 * 13) ** (1 / 3), rel=1e-12)
    assert v["fro_over_spec"] == pytest.approx(1 + 17 / 16 + 13 / 9, rel=1e-12)
    assert rep.bounds["param_count"].params["params"] == 2 + 2 + 2 + 2 + 4 + 4
    assert v["param_count"] == pytest.approx(16, rel=1e-12)  # value goes through log10
    assert v["effective_rank"] == pytest.approx(2.0, rel=1e-12)
    # (1,1): |2| + |-3| + |1| + |5| + (4 + 1) + (3 + 2) = 21; biases and norms outside the sum
    tt = rep.bounds["trauger_tewari_l11"]
    assert tt.value == pytest.approx(21.0, rel=1e-12)
    assert tt.params["l1_bias"] == pytest.approx(3.0) and tt.params["l1_norm"] == pytest.approx(2.0)
    assert set(tt.terms.loc[~tt.terms["in_sum"], "label"]) == {"bias", "norm"}
    # TT-style proxy: L = 1 so α = 1; ξ¹ = (3·4·5·(2·3))^{2/3} + (3·4·(1·5))^{2/3} + (3·5)^{2/3} + 5^{2/3}
    xi1 = (3 * 4 * 5 * 6) ** (2 / 3) + (3 * 4 * 5) ** (2 / 3) + 15 ** (2 / 3) + 5 ** (2 / 3)
    assert rep.bounds["trauger_tewari_proxy"].value == pytest.approx((1 + xi1) ** 1.5, rel=1e-12)
    # Edelman with T: ξ = (3·4·5·6)^{2/3} + (3·4·5)^{2/3} + (3·5)^{2/3} + 5^{2/3}
    xi = (3 * 4 * 5 * 6) ** (2 / 3) + (3 * 4 * 5) ** (2 / 3) + 15 ** (2 / 3) + 5 ** (2 / 3)
    assert v["edelman"] == pytest.approx((1 + xi) ** 1.5, rel=1e-12)
    assert v["edelman_seq_len"] == pytest.approx((1 + xi) ** 1.5 * math.sqrt(math.log(100)), rel=1e-12)
    # Bartlett: Π ρσ = 5·(1.13·4)·3; Σ (‖·‖_{2,1}/σ)^{2/3} = 1 + (5/4)^{2/3} + (5/3)^{2/3}
    s = 1 + 1.25 ** (2 / 3) + (5 / 3) ** (2 / 3)
    assert v["bartlett_spectral"] == pytest.approx(5 * L_PHI * 4 * 3 * s**1.5, rel=1e-12)
    assert v["neyshabur_pac_bayes"] == pytest.approx(25 * 16 * 9 * (1 + 17 / 16 + 13 / 9), rel=1e-12)
    for b in rep.bounds.values():
        assert b.citation and b.status in ("bound", "proxy", "baseline", "measure") and b.notes


# ---------------------------------------------------------------- brute force on formed matrices
def chain(mats):
    """Every analysed matrix (each QK[l,h], OV[l,h], M_in[l], M_out[l]) as (kind, A)."""
    for d in mats:
        for kind in ("QK", "OV", "M_in", "M_out"):
            for A in d[kind]:
                yield kind, A


def layer_chain(mats):
    """This project's layer chain (bounds.md section 6): per layer VO = sum_h OV[l,h], M_in, M_out."""
    for d in mats:
        yield "VO", sum(d["OV"])
        yield "M_in", d["M_in"][0]
        yield "M_out", d["M_out"][0]


def brute(tw, l_phi=L_PHI, T=None, ref=None):
    mats = formed(tw)
    refm = formed(ref) if ref is not None else None
    spec = lambda A: np.linalg.svd(A, compute_uv=False)[0]  # noqa: E731
    fro2 = lambda A: float((A * A).sum())  # noqa: E731
    n21 = lambda A: float(np.linalg.norm(A, axis=0).sum())  # noqa: E731
    l11 = lambda t: float(t.abs().sum())  # noqa: E731
    links = list(layer_chain(mats))
    assert len(links) == 3 * tw.info.n_layers
    dlinks = [A - A0 for (_, A), (_, A0) in zip(links, layer_chain(refm))] if refm else [A for _, A in links]
    d = len(links)
    out = {
        "log_prod_spec": math.prod(spec(A) ** 2 for _, A in links),
        "sum_fro": d * math.prod(fro2(A) for _, A in links) ** (1 / d),
        "fro_over_spec": sum(fro2(A) / spec(A) ** 2 for _, A in links),
        "bartlett_spectral": math.prod((l_phi if k == "M_in" else 1.0) * spec(A) for k, A in links)
        * sum((n21(D) / spec(A)) ** (2 / 3) for (_, A), D in zip(links, dlinks)) ** 1.5,
        "neyshabur_pac_bayes": math.prod(spec(A) ** 2 for _, A in links)
        * sum(fro2(D) / spec(A) ** 2 for (_, A), D in zip(links, dlinks)),
    }

    def erank(A):
        s = np.linalg.svd(A, compute_uv=False)
        s = s[s > 1e-12 * s[0]]
        q = s / s.sum()
        return math.exp(-(q * np.log(q)).sum())

    out["effective_rank"] = sum(erank(A) for k, A in chain(mats) if k in ("QK", "OV"))
    out["trauger_tewari_l11"] = sum(l11(getattr(m["lw"], k)) for m in mats for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out"))
    out["param_count"] = sum(getattr(m["lw"], k).numel() for m in mats for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out"))
    # α and the TT-style proxy
    L, grp = tw.info.n_layers, tw.info.n_heads // tw.info.n_kv_heads
    fac = [l_phi * spec(m["M_in"][0]) * spec(m["M_out"][0]) * sum(spec(o) * (1 + 4 * spec(q)) for q, o in zip(m["QK"], m["OV"])) for m in mats]
    alpha = [math.prod(fac[ell + 1:]) for ell in range(L)]
    tot = 1.0
    for ell, m in enumerate(mats):
        lw, cin, cout = m["lw"], spec(m["M_in"][0]), spec(m["M_out"][0])
        xi = sum((cout * cin * spec(m["OV"][h]) * l11(lw.W_Q[h]) * l11(lw.W_K[h // grp])) ** (2 / 3)
                 + (cout * cin * l11(lw.W_V[h // grp]) * l11(lw.W_O[h])) ** (2 / 3) for h in range(tw.info.n_heads))
        xi += (cout * l11(lw.M_in)) ** (2 / 3) + l11(lw.M_out) ** (2 / 3)
        tot += alpha[ell] ** (2 / 3) * xi
    out["trauger_tewari_proxy"] = tot**1.5
    return out


@pytest.mark.parametrize("kw", [dict(), dict(H=4, Hkv=2, seed=5), dict(L=3, scale=0.4, seed=2)])
def test_against_brute_force(kw):
    tw = make_model(**kw)
    rep = specbound.analyze(tw, l_phi=L_PHI, seq_len=512)
    ref = brute(tw)
    for name, want in ref.items():
        assert rep.bounds[name].value == pytest.approx(want, rel=1e-9), name
    assert rep.bounds["edelman_seq_len"].value == pytest.approx(rep.bounds["edelman"].value * math.sqrt(math.log(512)), rel=1e-12)
    assert [d["bound"] for d in rep.not_evaluated] == ["attention_effective_rank"]  # a data-side measure: needs text


@pytest.mark.parametrize("kw", [dict(), dict(H=4, Hkv=2, seed=5)])
def test_distances_to_a_reference_against_brute_force(kw):
    tw, tw0 = make_model(**kw), make_model(**{**kw, "seed": 11})
    rep = specbound.analyze(tw, l_phi=L_PHI, init=tw0)
    ref = brute(tw, ref=tw0)
    for name in ("bartlett_spectral", "neyshabur_pac_bayes"):
        assert rep.bounds[name].value == pytest.approx(ref[name], rel=1e-9), name
        assert any("reference checkpoint" in n for n in rep.bounds[name].notes)
    assert rep.options["init"] == "test"


def test_difference_model_spectra_equal_formed_differences():
    tw, tw0 = make_model(H=4, Hkv=2, seed=1), make_model(H=4, Hkv=2, seed=2)
    ds = compute_spectra(tw, reference=tw0)
    m, m0 = formed(tw), formed(tw0)
    for layer, head, kind, ms in ds.matrices():
        h = max(head, 0)
        D = m[layer][kind][h] - m0[layer][kind][h]
        s = np.linalg.svd(D, compute_uv=False)
        np.testing.assert_allclose(ms.full().numpy()[: ms.values.numel()], s[: ms.values.numel()], rtol=1e-9, atol=1e-12 * s[0])
        assert ms.norm_21 == pytest.approx(np.linalg.norm(D, axis=0).sum(), rel=1e-9)
    assert ds.info.d_head == 2 * tw.info.d_head and ds.info.n_kv_heads == tw.info.n_heads


def test_init_equal_to_the_model_gives_zero_distances_and_explicit_notes():
    tw = make_model()
    ds = compute_spectra(tw, reference=tw)
    assert all(float(ms.values.abs().max()) == 0.0 and ms.norm_21 == 0.0 for *_, ms in ds.matrices())
    rep = specbound.analyze(tw, init=tw)
    skipped = {d["bound"]: d["reason"] for d in rep.not_evaluated}
    assert set(skipped) == {"bartlett_spectral", "neyshabur_pac_bayes", "edelman_seq_len", "attention_effective_rank"}
    assert "zero" in skipped["bartlett_spectral"] and "zero" in skipped["neyshabur_pac_bayes"]
    doc = json.loads(report_json(rep))  # allow_nan=False: no NaN/inf anywhere
    assert {d["bound"] for d in doc["bounds_not_evaluated"]} == set(skipped)
    # one layer moved, the other frozen: exact zeros for the frozen one, finite values
    moved = TransformerWeights.from_layers(tw.info, [tw.layer(0), make_model(seed=9).layer(1)])
    rep2 = specbound.analyze(moved, init=tw, bounds="bartlett_spectral,neyshabur_pac_bayes")
    t = rep2.bounds["bartlett_spectral"].terms
    assert np.isneginf(t.loc[t.layer == 0, "ln_d_21"]).all() and np.isfinite(t.loc[t.layer == 1, "ln_d_21"]).all()
    assert all(math.isfinite(b.log10_value) for b in rep2.bounds.values())


def test_init_with_a_different_architecture_is_a_clear_error():
    tw = make_model()
    with pytest.raises(InputError, match="different architecture.*n_layers 2 vs 3"):
        specbound.analyze(tw, init=make_model(L=3))
    with pytest.raises(InputError, match="d_ff 10 vs 12"):
        specbound.analyze(tw, init=make_model(F=12))


# ---------------------------------------------------------------- invariances and homogeneity
def rotate_residual(tw, seed=3):
    N = tw.info.d_model
    U, _ = torch.linalg.qr(torch.randn(N, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return transform(tw, lambda lw: LayerWeights(
        lw.index, W_Q=U.T @ lw.W_Q, W_K=U.T @ lw.W_K, W_V=U.T @ lw.W_V, W_O=lw.W_O @ U,
        M_in=U.T @ lw.M_in, M_out=lw.M_out @ U))


def rotate_heads(tw, seed=4):
    """W_Q → W_Q R, W_K → W_K R (and V/O): every QK and OV is unchanged, the factors are not."""
    dh = tw.info.d_head
    R, _ = torch.linalg.qr(torch.randn(dh, dh, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return transform(tw, lambda lw: LayerWeights(
        lw.index, W_Q=lw.W_Q @ R, W_K=lw.W_K @ R, W_V=lw.W_V @ R, W_O=R.T @ lw.W_O, M_in=lw.M_in, M_out=lw.M_out))


ORTHO_INVARIANT = ["log_prod_spec", "sum_fro", "fro_over_spec", "neyshabur_pac_bayes", "effective_rank", "param_count"]
NOT_ORTHO_INVARIANT = ["trauger_tewari_l11", "trauger_tewari_proxy", "bartlett_spectral", "edelman_seq_len"]


def test_residual_rotation_invariance_and_its_absence_for_11_and_21_norms():
    tw = make_model(seed=6)
    a = vals(specbound.analyze(tw, seq_len=64, bounds=MINE))
    b = vals(specbound.analyze(rotate_residual(tw), seq_len=64, bounds=MINE))
    for n in ORTHO_INVARIANT:
        assert b[n] == pytest.approx(a[n], abs=1e-9), n
    for n in NOT_ORTHO_INVARIANT:
        assert abs(b[n] - a[n]) > 1e-4, n


def test_head_basis_change_moves_only_the_factor_norms():
    tw = make_model(seed=7)
    a = vals(specbound.analyze(tw, seq_len=64, bounds=MINE))
    b = vals(specbound.analyze(rotate_heads(tw), seq_len=64, bounds=MINE))
    for n in MINE:
        if n.startswith("trauger_tewari"):
            assert abs(b[n] - a[n]) > 1e-4, n  # (1,1) norms of W_Q, W_K, ... depend on the factorisation
        else:
            assert b[n] == pytest.approx(a[n], abs=1e-9), n  # functions of the products only


def test_homogeneity_degrees():
    L, H = 2, 3
    tw = make_model(L=L, H=H, Hkv=H)
    c = 1.7
    scaled = transform(tw, lambda lw: LayerWeights(lw.index, **{k: c * getattr(lw, k) for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out")}))
    a = vals(specbound.analyze(tw, seq_len=64, bounds=MINE))
    b = vals(specbound.analyze(scaled, seq_len=64, bounds=MINE))
    sum_deg = 2 * L + 1 * (2 * L)  # the layer chain: VO degree 2; M_in, M_out degree 1
    n_links = 3 * L
    degree = {
        "trauger_tewari_l11": 1, "log_prod_spec": 2 * sum_deg, "sum_fro": 2 * sum_deg / n_links,
        "fro_over_spec": 0, "effective_rank": 0, "param_count": 0,
        "neyshabur_pac_bayes": 2 * sum_deg, "bartlett_spectral": sum_deg,
    }
    for n, k in degree.items():
        assert b[n] - a[n] == pytest.approx(k * math.log10(c), abs=1e-9), n
    for n in ("edelman_seq_len", "trauger_tewari_proxy"):  # (1 + Σ …)^{3/2}: not homogeneous, but increasing
        assert b[n] > a[n]


def test_chain_families_scale_with_one_layers_value_path():
    """W_V of layer 1 times c scales VO[1] (one link) by c and nothing else of the chain: BFT by c,
    Neyshabur and log-prod-of-spec by c², sum-of-Frobenius by c^(2/d), d = 3L; fro/spec unchanged.
    QK enters no link: scaling W_Q changes none of them."""
    L, c = 3, 2.5
    tw = make_model(L=L, H=2, Hkv=2, seed=4)

    def scale(key):
        return transform(tw, lambda lw: LayerWeights(lw.index, **{
            k: getattr(lw, k) * (c if (k == key and lw.index == 1) else 1.0)
            for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out")}))

    chain_fams = ["bartlett_spectral", "neyshabur_pac_bayes", "log_prod_spec", "sum_fro", "fro_over_spec"]
    a, b, q = (vals(specbound.analyze(m, bounds=chain_fams)) for m in (tw, scale("W_V"), scale("W_Q")))
    lc = math.log10(c)
    want = {"bartlett_spectral": lc, "neyshabur_pac_bayes": 2 * lc, "log_prod_spec": 2 * lc,
            "sum_fro": 2 * lc / (3 * L), "fro_over_spec": 0.0}
    for n, k in want.items():
        assert b[n] - a[n] == pytest.approx(k, abs=1e-9), n
        assert q[n] == pytest.approx(a[n], abs=1e-12), n


# ---------------------------------------------------------------- seq_len, not evaluated, notes
def test_seq_len_is_needed_explicitly_and_skipped_with_a_note_otherwise():
    tw = make_model()
    rep = specbound.analyze(tw)
    assert "edelman_seq_len" not in rep.bounds
    assert rep.not_evaluated[0] == {"bound": "edelman_seq_len", "reason": "needs the sequence length T (--seq-len / seq_len=)"}
    assert [d["bound"] for d in rep.not_evaluated] == ["edelman_seq_len", "attention_effective_rank"]
    assert "--text" in rep.not_evaluated[1]["reason"]
    with pytest.raises(InputError, match="edelman_seq_len.*sequence length"):
        specbound.analyze(tw, bounds="edelman_seq_len")
    for bad in (1, 0, 2.5, True):
        with pytest.raises(InputError, match="seq_len"):
            specbound.analyze(tw, seq_len=bad)
    r = specbound.analyze(tw, bounds="edelman,edelman_seq_len", seq_len=2)
    assert r.bounds["edelman_seq_len"].log10_value == pytest.approx(
        r.bounds["edelman"].log10_value + 0.5 * math.log10(math.log(2)), abs=1e-12)


def test_architecture_notes_and_zero_matrices_stay_finite():
    tw = make_model(L=1)
    zero = transform(tw, lambda lw: LayerWeights(lw.index, W_Q=lw.W_Q * 0, W_K=lw.W_K, W_V=lw.W_V, W_O=lw.W_O,
                                                  M_in=lw.M_in, M_out=lw.M_out))
    rep = specbound.analyze(zero, seq_len=16)
    json.loads(report_json(rep))
    chain_fams = {"log_prod_spec", "sum_fro", "bartlett_spectral", "neyshabur_pac_bayes"}
    # a zero QK is in no link of the layer chain: the chain families are evaluated
    assert not chain_fams & {d["bound"] for d in rep.not_evaluated}
    assert all(math.isfinite(b.log10_value) for b in rep.bounds.values())
    # a zero W_V makes the value path zero, so products of spectral norms are 0: said so, never -inf/NaN
    zero_v = transform(tw, lambda lw: LayerWeights(lw.index, W_Q=lw.W_Q, W_K=lw.W_K, W_V=lw.W_V * 0, W_O=lw.W_O,
                                                    M_in=lw.M_in, M_out=lw.M_out))
    rep = specbound.analyze(zero_v, seq_len=16)
    json.loads(report_json(rep))
    skipped = {d["bound"]: d["reason"] for d in rep.not_evaluated}
    assert chain_fams <= set(skipped) and "VO" in skipped["bartlett_spectral"]
    assert all(math.isfinite(b.log10_value) for b in rep.bounds.values())
    info = ModelInfo("llama", 1, 12, 3, 3, 4, 10, source="x", notes=[specbound.Note.of("gated_mlp")])
    noted = TransformerWeights.from_layers(info, [tw.layer(0)])
    r2 = specbound.analyze(noted, bounds=MINE, seq_len=16, l_phi=1.1)
    for name in MINE:
        assert any(n.startswith("gated_mlp:") for n in r2.bounds[name].notes), name


def test_catalogue_metadata():
    reg = available_bounds()
    assert CATALOGUE <= set(reg)
    for name in CATALOGUE:
        b = reg[name]
        assert b.name == name and b.citation and b.title and b.assumptions
        assert b.status in ("bound", "proxy", "baseline", "measure")
    assert reg["edelman_seq_len"].needs == ("seq_len",)
    assert "init?" in reg["bartlett_spectral"].needs and "init?" in reg["neyshabur_pac_bayes"].needs
    assert "THIS PROJECT" in reg["trauger_tewari_proxy"].citation.upper()
    assert "2508.17256" in reg["effective_rank"].citation
