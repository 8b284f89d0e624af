"""E1 model (sparse_majority/model.py): the CLS-only forward equals the textbook one; Keras init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from specbound.experiments.sparse_majority import (
    BIASES,
    RunSpec,
    SparseMajorityConfig,
    forward_cls,
    forward_reference,
    model_inputs,
    run_data,
    run_init,
)


@pytest.mark.parametrize("T", [9, 33])
def test_cls_forward_matches_reference(T):
    cfg = SparseMajorityConfig(dtype="float64", n_train=25, n_val=5, n_test=5)
    d = run_data(cfg, RunSpec(T, 0))
    g = np.random.default_rng(7)
    p = {k: torch.as_tensor(v + 0.3 * g.standard_normal(v.shape)) for k, v in run_init(cfg, RunSpec(T, 0)).items()}
    ref = forward_reference(p, torch.as_tensor(d.embed("train")), 2)
    b, x0, de = model_inputs(d, "train", torch.float64)
    fast = forward_cls({k: v[None] for k, v in p.items()}, b[None], x0[None], de[None], 2)[0]
    assert ref.shape == fast.shape == (25, 2)
    assert (ref - fast).abs().max().item() < 1e-10 * max(1.0, ref.abs().max().item())


def test_init_shapes_and_keras_defaults():
    p = run_init(SparseMajorityConfig(), RunSpec(16, 0))
    assert p["W_q"].shape == (64, 128) and p["W_o"].shape == (128, 64)
    assert p["W_in"].shape == (64, 64) and p["W_out"].shape == (64, 2)
    for b in BIASES:
        assert not p[b].any()
    # Keras' fans of its 3-D attention kernels: [d, H, k] -> fan_in H*d = 128, fan_out k*d = 4096;
    # [H, k, d] -> fan_in k*H = 128, fan_out d*H = 128; Dense [64, 64] -> 64, 64
    lim_qkv, lim_o, lim_in = math.sqrt(6 / (128 + 4096)), math.sqrt(6 / (128 + 128)), math.sqrt(6 / 128)
    for name, lim in (("W_q", lim_qkv), ("W_k", lim_qkv), ("W_v", lim_qkv), ("W_o", lim_o), ("W_in", lim_in)):
        a = np.abs(p[name])
        assert a.max() <= lim and a.max() > 0.97 * lim, name  # uniform on [-lim, lim]: the max is near lim
        assert np.std(p[name]) == pytest.approx(lim / math.sqrt(3), rel=0.05), name


def test_readout_init_is_normal_005():
    ws = np.concatenate([run_init(SparseMajorityConfig(), RunSpec(16, s))["W_out"].ravel() for s in range(20)])
    assert ws.size == 20 * 128
    assert np.std(ws) == pytest.approx(0.05, rel=0.08)
    assert abs(np.mean(ws)) < 0.01
    # normal, not uniform: about 4.6% beyond 2 sigma (a uniform of that std has none beyond 1.73 sigma)
    assert 0.03 < np.mean(np.abs(ws) > 0.1) < 0.065
