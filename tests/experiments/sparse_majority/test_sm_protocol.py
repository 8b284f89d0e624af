"""E1 protocols (sparse_majority/config.py, train.py): the fit preset fits, its optimiser and
schedule are the textbook ones, every setting round-trips through config.json."""

from __future__ import annotations

import json
import math

import pytest
import torch

from specbound.experiments.sparse_majority import (
    PROTOCOLS,
    RunSpec,
    SparseMajorityConfig,
    protocol_config,
    quick_config,
    train_runs,
)
from specbound.experiments.sparse_majority.train import adam_step, lr_at

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fit_protocol_fits_every_seed_at_T128():
    """The fit preset, unchanged except that the test set is not drawn and the validation set
    is smaller (neither changes the training data or the updates), reaches 100% training
    accuracy on every seed at T = 128 (measured: epochs 1,598 and 1,815 of 8,000). About 15-25 s of
    CPU on one thread, the slowest test of E1."""
    cfg = protocol_config("fit", n_val=50, n_test=1)
    res = train_runs(cfg, [RunSpec(128, s) for s in range(2)])
    assert [r.stopped_at_cap for r in res] == [False, False], [r.reached_train_acc for r in res]
    assert all(r.reached_train_acc == 1.0 and r.epochs < cfg.max_epochs for r in res)


def test_literal_protocol_is_the_field_defaults():
    assert protocol_config("literal") == SparseMajorityConfig()
    fit = protocol_config("fit")
    assert fit.protocol == "fit" and fit.optimizer == PROTOCOLS["fit"]["optimizer"] != "sgd"
    assert fit.attn_init_scale == PROTOCOLS["fit"]["attn_init_scale"] != 1.0
    with pytest.raises(ValueError, match="unknown E1 protocol"):
        protocol_config("fast")


@pytest.mark.parametrize("protocol", ["fit", "literal"])
def test_config_round_trips_through_dict(protocol):
    from dataclasses import asdict

    cfg = quick_config(protocol, seed=3, lengths=(16, 40))
    d = json.loads(json.dumps(asdict(cfg)))
    assert SparseMajorityConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown fields \\['bogus'\\]"):
        SparseMajorityConfig.from_dict({**d, "bogus": 1})


def test_one_length_is_refused_by_the_study():
    with pytest.raises(ValueError, match="at least two lengths"):
        protocol_config("fit", lengths=(16,)).validate_study()


def test_warmup_cosine_and_linear_schedules():
    cfg = protocol_config("fit", lr=0.01, lr_min=0.001, warmup_epochs=10, max_epochs=110)
    assert lr_at(cfg, 0) == pytest.approx(0.001) and lr_at(cfg, 9) == pytest.approx(0.01)
    assert lr_at(cfg, 10) == pytest.approx(0.01)  # start of the decay
    assert lr_at(cfg, 60) == pytest.approx(0.001 + 0.009 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_at(cfg, 85) == pytest.approx(0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert lr_at(cfg, 110) == pytest.approx(0.001)
    lin = protocol_config("fit", schedule="warmup_linear", lr=0.01, lr_min=0.0, warmup_epochs=10, max_epochs=110)
    assert lr_at(lin, 35) == pytest.approx(0.01 * 0.75)


@pytest.mark.parametrize("name,wd", [("adam", 0.0), ("adam", 0.1), ("adamw", 0.1)])
def test_adam_step_equals_torch_optim(name, wd):
    """Five updates with changing learning rates equal torch.optim.Adam / AdamW's."""
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    grads = [torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(5)]
    lrs = [1e-3, 3e-3, 2e-2, 5e-3, 1e-1]
    cfg = protocol_config("fit", optimizer=name, weight_decay=wd, beta2=0.99, adam_eps=1e-6)
    p = {"w": w0.clone()}
    m, v = {"w": torch.zeros_like(w0)}, {"w": torch.zeros_like(w0)}
    ref = w0.clone().requires_grad_(True)
    opt = (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(
        [ref], lr=lrs[0], betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, weight_decay=wd)
    for t, (gr, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        adam_step(p, m, v, {"w": gr}, t, lr, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        ref.grad = gr.clone()
        opt.step()
        torch.testing.assert_close(p["w"], ref.detach(), rtol=1e-12, atol=1e-14)
    assert (p["w"] - w0).abs().max() > 1e-3


def test_attn_init_scale_scales_q_and_k_only():
    from specbound.experiments.sparse_majority import run_init

    a = run_init(SparseMajorityConfig(), RunSpec(16, 0))
    b = run_init(SparseMajorityConfig(attn_init_scale=3.0), RunSpec(16, 0))
    for k in a:
        factor = 3.0 if k in ("W_q", "W_k") else 1.0
        assert (b[k] == a[k] * factor).all(), k


@pytest.mark.parametrize("field,value", [("optimizer", "rmsprop"), ("schedule", "step"), ("lr", 0.0),
                                         ("attn_init_scale", -1.0), ("beta2", 1.0), ("warmup_epochs", 16000)])
def test_bad_protocol_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        SparseMajorityConfig(**{field: value}).validate()
