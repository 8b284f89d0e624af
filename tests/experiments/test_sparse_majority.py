"""Tests of experiment E1 (sparse majority): generator, model, training rules, reproducibility,
the slope helper, the adapter and the ``--quick`` command end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from specbound.experiments.common import run_rng, slope_with_ci, t_quantile
from specbound.experiments.sparse_majority import (
    BIASES,
    CLS,
    KERNELS,
    RunSpec,
    SparseMajorityConfig,
    evaluate,
    forward_cls,
    forward_reference,
    generate_data,
    majority_labels,
    make_embeddings,
    model_inputs,
    run_data,
    run_init,
    sinusoidal_encoding,
    to_transformer_weights,
    train_runs,
    weight_norms,
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# A configuration in which most runs reach 100% training accuracy within a few dozen
# epochs (8 training samples, constant lr 0.02) and one stops at the cap: exercises the
# stopping rule, selection and runs leaving the batch at different epochs.
FAST = SparseMajorityConfig(n_train=8, n_val=64, n_test=64, max_epochs=300, lr=0.02, lr_min=0.02)
FAST_SPECS = [RunSpec(10, s) for s in range(4)]


@pytest.fixture(scope="module")
def fast_batch():
    torch.set_num_threads(1)
    return train_runs(FAST, FAST_SPECS, keep_history=True)


# --------------------------------------------------------------------------- generator


def test_labels_are_majority_of_support():
    d = generate_data(40, run_rng(0, 1), 500, 10, 10)
    assert len(d.support) == 9 and len(set(d.support.tolist())) == 9
    assert d.support.min() >= 0 and d.support.max() < 40
    bits_in_s = d.x_train[:, d.support]
    np.testing.assert_array_equal(d.y_train, (bits_in_s.sum(1) >= 5).astype(int))
    # bits outside S do not matter: flip all of them, labels unchanged
    x = d.x_train.copy()
    outside = np.setdiff1d(np.arange(40), d.support)
    x[:, outside] = 1 - x[:, outside]
    np.testing.assert_array_equal(majority_labels(x, d.support), d.y_train)
    assert 0.3 < d.y_train.mean() < 0.7  # balanced-ish
    assert set(np.unique(d.x_test)) <= {0, 1}


def test_embeddings_orthogonal_unit_l1():
    e = make_embeddings(run_rng(3), 64)
    assert e.shape == (3, 64)
    np.testing.assert_allclose(np.abs(e).sum(1), 1.0, rtol=0, atol=1e-12)
    g = e @ e.T
    off = g - np.diag(np.diag(g))
    assert np.abs(off).max() < 1e-15
    assert (np.diag(g) > 0).all()


def test_sinusoidal_encoding_formula():
    pe = sinusoidal_encoding(17, 64)
    assert pe.shape == (17, 64)
    np.testing.assert_allclose(pe[0, 0::2], 0.0)
    np.testing.assert_allclose(pe[0, 1::2], 1.0)
    t, i = 5, 3
    np.testing.assert_allclose(pe[t, 2 * i], math.sin(t / 10000 ** (2 * i / 64)))
    np.testing.assert_allclose(pe[t, 2 * i + 1], math.cos(t / 10000 ** (2 * i / 64)))
    np.testing.assert_allclose(pe[:, 0], np.sin(np.arange(17)))


def test_cls_last_and_inputs():
    T = 20
    d = generate_data(T, run_rng(0, 2), 30, 5, 5)
    tok = d.tokens("train")
    assert tok.shape == (30, T + 1)
    assert (tok[:, T] == CLS).all() and (tok[:, :T] != CLS).all()
    x = d.embed("train")
    np.testing.assert_allclose(x[:, T], np.broadcast_to(d.embeddings[CLS] + d.pos_enc[T], (30, 64)))
    np.testing.assert_allclose(x[3, 7], d.embeddings[d.x_train[3, 7]] + d.pos_enc[7])
    assert d.pos_enc.shape == (T + 1, 64)


def test_data_deterministic_per_run_and_distinct_across_runs():
    cfg = SparseMajorityConfig(n_val=20, n_test=20)
    a, b = run_data(cfg, RunSpec(16, 0)), run_data(cfg, RunSpec(16, 0))
    c = run_data(cfg, RunSpec(16, 1))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert not np.array_equal(a.x_train, c.x_train)
    # train/val/test are independent draws
    assert not np.array_equal(a.x_train[:20], a.x_val)


# --------------------------------------------------------------------------- model


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
    assert np.abs(p["W_q"]).max() <= math.sqrt(6 / (64 + 128))


# --------------------------------------------------------------------------- training rules


def test_stopping_rule_first_epoch_with_full_train_accuracy(fast_batch):
    assert any(not r.stopped_at_cap for r in fast_batch), "fixture should have runs that reach 100%"
    assert any(r.stopped_at_cap for r in fast_batch), "fixture should have a run that hits the cap"
    assert len({r.epochs for r in fast_batch}) > 1
    for r in fast_batch:
        acc = r.history["train_acc"]
        assert len(acc) == r.epochs + 1  # states 0..epochs
        if r.stopped_at_cap:
            assert r.epochs == FAST.max_epochs
            assert all(a < 1 for a in acc[1:])
            assert r.reached_train_acc == acc[-1] < 1
        else:
            assert acc[-1] == 1.0 and r.reached_train_acc == 1.0
            assert all(a < 1 for a in acc[1:-1])  # first such epoch


def test_selection_on_validation_loss(fast_batch):
    for r, spec in zip(fast_batch, FAST_SPECS, strict=True):
        assert r.spec == spec
        vl = r.history["val_loss"]
        cand = vl[1:r.epochs + 1]
        assert r.best_epoch == 1 + int(np.argmin(cand))
        assert r.best_val_loss == min(cand)
        # the returned weights are the selected ones: their validation loss is the best one
        _, vloss = evaluate(r.params, run_data(FAST, spec), "val", FAST)
        assert vloss == pytest.approx(r.best_val_loss, rel=1e-5)
        # and not simply the final weights when the best epoch is earlier
    assert any(r.best_epoch < r.epochs for r in fast_batch)


def test_fixed_seed_run_is_bit_reproducible(fast_batch):
    again = train_runs(FAST, FAST_SPECS)
    for a, b in zip(fast_batch, again, strict=True):
        assert a.epochs == b.epochs and a.best_epoch == b.best_epoch
        assert a.best_val_loss == b.best_val_loss
        for k in a.params:
            assert torch.equal(a.params[k], b.params[k]), k


def test_run_independent_of_batch_mates(fast_batch):
    """A run trained alone, or with other batch mates, is bit-identical to the same run in the
    full batch (batch mates leave at different epochs in the full batch)."""
    for subset in ([FAST_SPECS[2]], [FAST_SPECS[3], FAST_SPECS[0]]):
        alone = train_runs(FAST, subset)
        for r in alone:
            ref = fast_batch[FAST_SPECS.index(r.spec)]
            assert (r.epochs, r.best_epoch, r.best_val_loss) == (ref.epochs, ref.best_epoch, ref.best_val_loss)
            for k in r.params:
                assert torch.equal(r.params[k], ref.params[k]), (r.spec, k)


def test_train_runs_rejects_mixed_lengths():
    with pytest.raises(ValueError):
        train_runs(FAST, [RunSpec(10, 0), RunSpec(12, 0)])


# --------------------------------------------------------------------------- adapter and norms


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
    specbound = pytest.importorskip("specbound")
    if not callable(getattr(specbound, "analyze", None)):
        pytest.skip("specbound.analyze not available")
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


# --------------------------------------------------------------------------- statistics


def test_t_quantile_known_values():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062047, abs=1e-6)
    assert t_quantile(0.975, 5) == pytest.approx(2.5705818, abs=1e-6)
    assert t_quantile(0.975, 30) == pytest.approx(2.0422725, abs=1e-6)
    assert t_quantile(0.975, float("inf")) == pytest.approx(1.9599640, abs=1e-6)
    assert t_quantile(0.025, 10) == pytest.approx(-2.2281389, abs=1e-6)


def test_slope_with_ci_recovers_known_slope():
    g = np.random.default_rng(0)
    x = np.repeat(np.log2([16, 32, 64, 128, 256, 512]), 5)
    y = 0.7 * x + 3 + g.normal(0, 0.2, x.size)
    fit = slope_with_ci(x, y)
    assert fit.n == 30
    assert fit.ci_low < 0.7 < fit.ci_high
    assert fit.slope == pytest.approx(0.7, abs=0.06)
    assert fit.contains_zero is False
    # no trend: interval contains 0
    flat = slope_with_ci(x, 3 + g.normal(0, 0.2, x.size))
    assert flat.contains_zero is True
    # exact line: zero-width interval; NaNs dropped
    exact = slope_with_ci(np.array([1, 2, 3, np.nan]), np.array([2.0, 4.0, 6.0, 1.0]))
    assert exact.n == 3 and exact.slope == pytest.approx(2.0)
    assert exact.ci_high - exact.ci_low == pytest.approx(0.0, abs=1e-9)


def test_slope_ci_coverage():
    """The 95% interval covers the true slope in about 95% of repeated draws."""
    g = np.random.default_rng(1)
    x = np.repeat(np.arange(4.0), 2)
    hits = 0
    for _ in range(400):
        f = slope_with_ci(x, -0.3 * x + g.normal(0, 1, x.size))
        hits += f.ci_low <= -0.3 <= f.ci_high
    assert 0.92 <= hits / 400 <= 0.98


# --------------------------------------------------------------------------- command


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    from typer.testing import CliRunner

    from specbound.cli import app

    out = tmp_path_factory.mktemp("e1quick")
    res = CliRunner().invoke(app, ["experiment", "sparse-majority", "--quick", "--out", str(out), "--verbose"])
    return out, res


def test_quick_cli_writes_every_file(quick_out):
    out, res = quick_out
    assert res.exit_code == 0, res.output
    assert "T=16 seed=0" in res.output  # verbose per-run lines
    runs = pd.read_csv(out / "runs.csv")
    trends = pd.read_csv(out / "trends.csv")
    meta = json.loads((out / "config.json").read_text())
    assert len(runs) == 3 * 2 and sorted(runs["T"].unique()) == [16, 32, 64]
    for col in ("train_acc", "test_acc", "val_acc", "reached_train_acc"):
        assert runs[col].between(0, 1).all(), col
    for col in ("train_loss", "test_loss", "acc_gap", "loss_gap", "l1_norm_sum", "l1_b_q",
                "spec_QK0", "fro_OV1", "norm21_M_in", "epochs", "stopped_at_cap"):
        assert col in runs.columns, col
    np.testing.assert_allclose(runs["acc_gap"], runs["train_acc"] - runs["test_acc"])
    assert (runs["epochs"] <= 300).all()
    assert (runs["l1_norm_sum"] > 0).all()
    bound_cols = [c for c in runs.columns if c.startswith("log10_")]
    if meta["bounds_available"]:
        assert {"log10_spectrum_adaptive", "log10_edelman"} <= set(bound_cols)
        assert np.isfinite(runs[bound_cols].to_numpy()).all()
    assert {"acc_gap", "l1_norm_sum", *bound_cols} <= set(trends["quantity"])
    assert {"slope_per_doubling", "ci_low", "ci_high", "ci_contains_zero"} <= set(trends.columns)
    assert (trends["ci_low"] <= trends["slope_per_doubling"]).all()
    for key in ("python", "torch", "numpy", "specbound"):
        assert key in meta["versions"]
    assert meta["seed"] == 0 and meta["wall_time_seconds"] > 0
    assert meta["config"]["quick"] is True and meta["quick_deviations"]
    for name in ["plot_acc_gap.png", "plot_l1_norm_sum.png", *[f"plot_{c}.png" for c in bound_cols]]:
        assert (out / name).stat().st_size > 1000, name


def test_quick_cli_rerun_reuses_cache(quick_out):
    from typer.testing import CliRunner

    from specbound.cli import app

    out, _ = quick_out
    before = pd.read_csv(out / "runs.csv")
    res = CliRunner().invoke(app, ["experiment", "sparse-majority", "--quick", "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["runs_reused_from_cache"] == 6
    after = pd.read_csv(out / "runs.csv")
    pd.testing.assert_frame_equal(before, after)


@pytest.mark.parametrize("args,needle", [
    (["--lengths", "16,abc"], "--lengths"),
    (["--lengths", "4,16"], "s = 9"),
    (["--seeds", "0"], "--seeds"),
    (["--max-epochs", "-3"], "--max-epochs"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, args, needle):
    from typer.testing import CliRunner

    from specbound.cli import app

    res = CliRunner().invoke(app, ["experiment", "sparse-majority", "--quick", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o" / "runs.csv").exists()
