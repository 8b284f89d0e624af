"""E1 measures (sparse_majority/norms.py): the adapter, the experiment's norms and the
library's report agree."""

from __future__ import annotations

import math

import pytest
import torch

from specbound.experiments.sparse_majority import (
    BIASES,
    KERNELS,
    RunSpec,
    SparseMajorityConfig,
    run_init,
    to_transformer_weights,
    weight_norms,
)


def test_adapter_and_norms_agree_with_canonical_matrices():
    cfg = SparseMajorityConfig()
    p = {k: torch.as_tensor(v) for k, v in run_init(cfg, RunSpec(16, 1)).items()}
    p["b_q"] = p["b_q"] + 0.5
    tw = to_transformer_weights(p, cfg)
    info = tw.info
    assert (info.n_layers, info.d_model, info.n_heads, info.n_kv_heads, info.d_head, info.d_ff) == (1, 64, 2, 2, 64, 64)
    assert info.activation == "relu"
    codes = {n.code for n in info.notes}
    assert {"no_feedforward_activation_between", "readout_as_m_out"} <= codes
    from specbound.weights.canonical import NOTE_CODES

    assert codes <= set(NOTE_CODES)
    lw = tw.layer(0)
    assert lw.W_Q.shape == (2, 64, 64) and lw.W_O.shape == (2, 64, 64) and lw.M_out.shape == (64, 2)
    torch.testing.assert_close(lw.W_Q[1], p["W_q"][:, 64:])
    torch.testing.assert_close(lw.W_O[1], p["W_o"][64:, :])
    assert set(lw.extras) == set(BIASES)
    n = weight_norms(p, cfg)
    qk1 = p["W_q"][:, 64:] @ p["W_k"][:, 64:].T
    assert n["spec_QK1"] == pytest.approx(float(torch.linalg.matrix_norm(qk1, 2)))
    assert n["norm21_QK1"] == pytest.approx(float(qk1.norm(dim=0).sum()))
    # Trauger & Tewari's tracked quantity: every trainable variable, biases included (b_q = 0.5
    # in 128 entries, every other bias 0); the weights-only sum is a separate quantity
    assert n["l1_sum_weights_only"] == pytest.approx(sum(float(p[k].abs().sum()) for k in KERNELS))
    assert n["l1_b_q"] == pytest.approx(0.5 * 128)
    assert n["l1_bias_sum"] == pytest.approx(64)
    assert n["l1_sum_all_variables"] == pytest.approx(n["l1_sum_weights_only"] + 64)
    assert n["l1_sum_all_variables"] == pytest.approx(sum(float(v.abs().sum()) for v in p.values()))
    assert "l1_norm_sum" not in n and "l1_norm_sum_with_biases" not in n


def test_norms_agree_with_analyze_report():
    import specbound

    cfg = SparseMajorityConfig()
    p = {k: torch.as_tensor(v) for k, v in run_init(cfg, RunSpec(16, 0)).items()}
    rep = specbound.analyze(to_transformer_weights(p, cfg), l_phi=1.0)
    m = rep.matrices
    n = weight_norms(p, cfg)
    ov0 = m[(m["kind"] == "OV") & (m["head"] == 0)].iloc[0]
    assert ov0.spectral_norm == pytest.approx(n["spec_OV0"], rel=1e-9)
    assert ov0.norm_21 == pytest.approx(n["norm21_OV0"], rel=1e-9)
    mout = m[m.kind == "M_out"].iloc[0]
    assert mout.frobenius == pytest.approx(n["fro_M_out"], rel=1e-9)
    for b in rep.bounds.values():
        assert math.isfinite(b.log10_value)


def test_bound_columns_are_every_family_with_the_librarys_seq_len_one_and_adaptivity():
    import specbound
    from specbound.experiments.sparse_majority import bound_columns

    cfg = SparseMajorityConfig()
    p = {k: torch.as_tensor(v) for k, v in run_init(cfg, RunSpec(16, 0)).items()}
    cols = bound_columns(p, cfg, 16)
    rep = specbound.analyze(to_transformer_weights(p, cfg), l_phi=1.0, seq_len=17)
    assert "edelman_seq_len" in rep.bounds
    # no construction of E1's own (B_E * ln T is gone); the library's B_E * sqrt(ln(T + 1))
    assert set(cols) == {f"log10_{n}" for n in rep.bounds} | {"frac_p_star_zero", "median_log10_scale_margin"}
    assert "log10_edelman_logT" not in cols
    assert cols["log10_edelman_seq_len"] == pytest.approx(cols["log10_edelman"] + 0.5 * math.log10(math.log(17)),
                                                          rel=1e-12)
    assert cols["frac_p_star_zero"] == rep.adaptivity["frac_p_star_zero"]
    assert cols["median_log10_scale_margin"] == rep.adaptivity["median_log10_scale_margin"]
    assert 0.0 <= cols["frac_p_star_zero"] <= 1.0
