"""E1 data (sparse_majority/data.py): labels, embeddings, positional codes, seeded runs."""

from __future__ import annotations

import math

import numpy as np

from specbound.experiments.common import run_rng
from specbound.experiments.sparse_majority import (
    CLS,
    RunSpec,
    SparseMajorityConfig,
    generate_data,
    majority_labels,
    make_embeddings,
    run_data,
    sinusoidal_encoding,
)


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


def test_sinusoidal_encoding_formula_of_the_authors_script():
    pe = sinusoidal_encoding(17, 64)
    assert pe.shape == (17, 64)
    np.testing.assert_allclose(pe[0, 0::2], 0.0)
    np.testing.assert_allclose(pe[0, 1::2], 1.0)
    # exponent i/d for every column i (the script's make_pe), not 2*floor(i/2)/d
    t = 5
    for i in (2, 6, 7, 63):
        f = math.sin if i % 2 == 0 else math.cos
        np.testing.assert_allclose(pe[t, i], f(t / 10000 ** (i / 64)), rtol=1e-14)
    assert abs(pe[t, 7] - math.cos(t / 10000 ** (6 / 64))) > 1e-3
    np.testing.assert_allclose(pe[:, 0], np.sin(np.arange(17)))
    np.testing.assert_allclose(pe[:, 1], np.cos(np.arange(17) / 10000 ** (1 / 64)))


def test_embeddings_are_drawn_uniform_before_orthogonalisation():
    # the first token ("0") is only l1-scaled: its direction is the raw U(-1,1) draw
    rng = run_rng(3)
    raw = run_rng(3).uniform(-1, 1, size=(3, 64))
    e = make_embeddings(rng, 64)
    np.testing.assert_allclose(e[0], raw[0] / np.abs(raw[0]).sum(), rtol=1e-14)


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
