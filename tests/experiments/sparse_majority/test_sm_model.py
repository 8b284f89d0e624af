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


@pytest.mark.parametrize("scale", [0.3, 1.5])
def test_cls_forward_gradients_match_reference(scale):
    """Outputs and the gradient of every parameter agree with the full-attention forward to
    1e-10 (float64) on random weights and random bits, at a mild and a saturating score scale
    (``scale`` 1.5: logits of order 1e4, attention scores spread over tens of nats)."""
    cfg = SparseMajorityConfig(dtype="float64", n_train=40, n_val=5, n_test=5)
    d = run_data(cfg, RunSpec(21, 1))
    g = np.random.default_rng(11)
    init = run_init(cfg, RunSpec(21, 1))
    p = {k: torch.as_tensor(v + scale * g.standard_normal(v.shape)) for k, v in init.items()}
    p["W_k"] = p["W_k"] * 3  # wider score spread
    ref_p = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    fast_p = {k: v[None].clone().requires_grad_(True) for k, v in p.items()}
    ref = forward_reference(ref_p, torch.as_tensor(d.embed("train")), 2)
    b, x0, de = model_inputs(d, "train", torch.float64)
    fast = forward_cls(fast_p, b[None], x0[None], de[None], 2)[0]
    w = torch.as_tensor(g.standard_normal(ref.shape))  # a random linear functional of the logits
    assert ref.abs().max() > 1.0  # the logits are not trivially small
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
    gr = torch.autograd.grad((ref * w).sum(), [ref_p[k] for k in ref_p])
    gf = torch.autograd.grad((fast * w).sum(), [fast_p[k] for k in ref_p])
    top = max(a.abs().max().item() for a in gr)
    for k, a, f in zip(ref_p, gr, gf, strict=True):
        # b_k shifts every score of a head by the same amount: the softmax ignores it (gradient 0)
        scale_k = top if k == "b_k" else a.abs().max().item()  # per parameter, to 1e-10 of its scale
        assert (a.abs().max() > 1e-9 * top) == (k != "b_k"), k
        torch.testing.assert_close(f[0], a, rtol=1e-10, atol=1e-10 * scale_k, msg=k)


def test_cls_forward_accepts_the_design_matrix():
    from specbound.experiments.sparse_majority.model import cls_design

    cfg = SparseMajorityConfig(dtype="float64", n_train=12, n_val=5, n_test=5)
    d = run_data(cfg, RunSpec(12, 0))
    p = {k: torch.as_tensor(v)[None] for k, v in run_init(cfg, RunSpec(12, 0)).items()}
    b, x0, de = model_inputs(d, "train", torch.float64)
    a = forward_cls(p, b[None], x0[None], de[None], 2)
    design = cls_design(b[None])
    assert design.shape == (1, 12, 26) and torch.equal(design[..., :13] + design[..., 13:], torch.ones(1, 12, 13))
    assert torch.equal(forward_cls(p, design, x0[None], de[None], 2), a)
