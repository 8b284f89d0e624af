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
    assert n["l1_norm_sum"] == pytest.approx(sum(float(p[k].abs().sum()) for k in KERNELS))
    assert n["l1_b_q"] == pytest.approx(0.5 * 128)
    assert n["l1_norm_sum_with_biases"] == pytest.approx(n["l1_norm_sum"] + 64)


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


def test_bound_columns_are_every_family_plus_the_derived_one():
    import specbound
    from specbound.experiments.sparse_majority import bound_columns

    cfg = SparseMajorityConfig()
    p = {k: torch.as_tensor(v) for k, v in run_init(cfg, RunSpec(16, 0)).items()}
    cols = bound_columns(p, cfg, 16)
    rep = specbound.analyze(to_transformer_weights(p, cfg), l_phi=1.0)
    assert set(cols) == {f"log10_{n}" for n in rep.bounds} | {"log10_edelman_logT"}
    assert cols["log10_edelman_logT"] == pytest.approx(cols["log10_edelman"] + math.log10(math.log(16)), rel=1e-12)
