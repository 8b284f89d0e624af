"""E1 batched trainer (sparse_majority/train.py): stopping rule, selection, bit-reproducibility,
independence of batch mates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from specbound.experiments.sparse_majority import RunSpec, SparseMajorityConfig, evaluate, run_data, train_runs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# A configuration in which some runs reach 100% training accuracy (4 training samples, constant
# lr 0.1; with the authors' small initial scale, at epochs 1 and 222) and two stop at the cap:
# exercises the stopping rule, selection and runs leaving the batch at different epochs.
FAST = SparseMajorityConfig(n_train=4, n_val=64, n_test=64, max_epochs=300, lr=0.1, lr_min=0.1)
FAST_SPECS = [RunSpec(10, s) for s in range(4)]


@pytest.fixture(scope="module")
def fast_batch():
    torch.set_num_threads(1)
    return train_runs(FAST, FAST_SPECS, keep_history=True)


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


def test_bce_on_one_hot_labels_by_hand():
    from specbound.experiments.sparse_majority.train import bce_one_hot

    # logits (2, -1) with label 0: one-hot (1, 0): softplus(-2) and softplus(-1)... i.e.
    # -log sigmoid(2) and -log(1 - sigmoid(-1))
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    sig = torch.sigmoid
    want = torch.tensor([[-math.log(sig(torch.tensor(2.0))), -math.log(1 - sig(torch.tensor(-1.0)))],
                         [math.log(2.0), -math.log(1 - sig(torch.tensor(3.0)))]], dtype=torch.float64)
    torch.testing.assert_close(bce_one_hot(logits, y), want)


def test_keras_momentum_and_schedule():
    from specbound.experiments.sparse_majority.train import keras_sgd_step, lr_at

    cfg = SparseMajorityConfig()
    assert lr_at(cfg, 0) == pytest.approx(0.01 * 0.999)  # Keras applies the schedule before epoch 0
    assert lr_at(cfg, 10_000) == 0.001
    th = {"w": torch.tensor([1.0], dtype=torch.float64)}
    v = {"w": torch.zeros(1, dtype=torch.float64)}
    g1, g2, lr1, lr2, mu = 2.0, -1.0, 0.1, 0.05, 0.9
    keras_sgd_step(th, v, {"w": torch.tensor([g1], dtype=torch.float64)}, lr1, mu)
    keras_sgd_step(th, v, {"w": torch.tensor([g2], dtype=torch.float64)}, lr2, mu)
    keras = 1.0 - lr1 * g1 - mu * lr1 * g1 - lr2 * g2
    pytorch = 1.0 - lr1 * g1 - lr2 * (mu * g1 + g2)
    assert th["w"].item() == pytest.approx(keras, rel=1e-15)
    assert abs(keras - pytorch) > 1e-3
