"""End to end on the real trained model (all-MiniLM-L6-v2, a 6-layer BERT, N = 384, 12 heads)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import specbound


def test_shape_and_finiteness(minilm_report):
    r = minilm_report
    assert (r.model.L, r.model.N, r.model.H, r.model.H_kv, r.model.d_h, r.model.d_ff) == (6, 384, 12, 12, 32, 1536)
    assert len(r.matrices) == 6 * (12 + 12 + 2)
    for b in r.bounds.values():
        assert b.value is not None and math.isfinite(b.value) and math.isfinite(b.log10_value)
        assert b.value == pytest.approx(10 ** b.log10_value, rel=1e-12)
    json.dumps(r.to_dict(), allow_nan=False)
    numeric = r.matrices.select_dtypes("number")
    assert numeric.notna().all().all()


def test_p_star_on_grid_alpha_monotone_and_lower_bound(minilm_report):
    r = minilm_report
    m = r.options["grid_m"]
    assert m == math.ceil(6 + math.log(384))
    k = r.matrices["p_star"].to_numpy() * m
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert ((k >= 0) & (k <= 2 * m)).all()
    la = r.matrices.groupby("layer")["log10_alpha"].first().to_numpy(dtype=float)
    assert (np.diff(la) <= 0).all() and la[-1] == 0.0
    assert 20 < la[0] < 25  # bounds.md: α ≈ 1e22 for a trained 6-layer BERT with N = 384
    assert r.bounds["spectrum_adaptive"].value >= math.sqrt(6)


def test_b_sa_is_the_sum_of_its_terms(minilm_report):
    """B_SA = Σ T(A; p*) + sqrt(L), and T ≤ T(0) = sqrt(N·rank) for every matrix (p* minimises)."""
    r = minilm_report
    m = r.matrices
    assert r.bounds["spectrum_adaptive"].value == pytest.approx(m["term"].sum() + math.sqrt(6), rel=1e-12)
    np.testing.assert_allclose(m["term_p0"].to_numpy(float), np.sqrt(384 * m["rank"].to_numpy()), rtol=1e-12)
    assert (m["term"].to_numpy(float) <= m["term_p0"].to_numpy(float) * (1 + 1e-12)).all()
    # trained heads have full rank d_h, feed-forward matrices full rank N
    assert (m[m["kind"].isin(["QK", "OV"])]["rank"] == 32).all()
    assert (m[m["kind"].isin(["M_in", "M_out"])]["rank"] == 384).all()


def test_matrices_against_transformers_modules(minilm_path, minilm_report):
    """σ(QK) and σ(OV) of a few heads from the model's own modules, formed densely."""
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel.from_pretrained(str(minilm_path))
    for layer, h in ((0, 0), (3, 7), (5, 11)):
        att = model.encoder.layer[layer].attention
        hs = slice(h * 32, (h + 1) * 32)
        q, k = att.self.query.weight.detach().double(), att.self.key.weight.detach().double()
        v, o = att.self.value.weight.detach().double(), att.output.dense.weight.detach().double()
        qk = q[hs].T @ k[hs]
        ov = v[hs].T @ o.T[hs]
        np.testing.assert_allclose(minilm_report.spectra(layer, h, "QK")[:32], torch.linalg.svdvals(qk)[:32].detach().numpy(), rtol=1e-9)
        np.testing.assert_allclose(minilm_report.spectra(layer, h, "OV")[:32], torch.linalg.svdvals(ov)[:32].detach().numpy(), rtol=1e-9)
        row = minilm_report.matrices.query("layer == @layer and head == @h and kind == 'QK'").iloc[0]
        assert row["norm_21"] == pytest.approx(float(qk.norm(dim=0).sum()), rel=1e-10)
    m_in = model.encoder.layer[2].intermediate.dense.weight.double().T.detach()
    np.testing.assert_allclose(minilm_report.spectra(2, -1, "M_in"), torch.linalg.svdvals(m_in).numpy(), rtol=1e-9)


def test_dense_parity_on_the_real_model(minilm_path, minilm_report):
    dense = specbound.analyze(minilm_path, dense=True)
    for name in ("spectrum_adaptive", "edelman"):
        assert dense.bounds[name].value == pytest.approx(minilm_report.bounds[name].value, rel=1e-9)


def test_not_analysed_lists_embeddings_biases_norms(minilm_report):
    names = {t["tensor"] for t in minilm_report.not_analysed}
    assert "embeddings.word_embeddings.weight" in names
    assert "encoder.layer.0.attention.self.query.bias" in names
    assert "encoder.layer.5.output.LayerNorm.weight" in names
    assert not any(n.endswith("attention.self.query.weight") for n in names)


def test_spectra_and_term_curve_accessors(minilm_report):
    s = minilm_report.spectra(1, 2, "OV")
    assert s.shape == (384,) and (np.diff(s) <= 0).all() and (s[32:] == 0).all()
    grid, t = minilm_report.term_curve(1, 2, "OV")
    row = minilm_report.matrices.query("layer == 1 and head == 2 and kind == 'OV'").iloc[0]
    assert t[0] == pytest.approx(float(row["log10_term_p0"]))
    assert t.min() == pytest.approx(float(row["log10_term"]))
    with pytest.raises(specbound.InputError, match="head"):
        minilm_report.spectra(0, 12, "QK")
    with pytest.raises(specbound.InputError, match="kind"):
        minilm_report.spectra(0, 0, "QV")
