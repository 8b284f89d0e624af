"""E3 data (correlation/data.py): nested pools, label noise, task instances."""

from __future__ import annotations


import numpy as np
import pytest

from specbound.experiments import correlation as e3

pytest.importorskip("transformers")


def test_sparse_majority_data_nested_and_noisy():
    cfg = e3.quick_config(seed=5)
    s = cfg.settings_dict
    clean = e3.make_task_data(cfg, 4000, 0.0)
    noisy = e3.make_task_data(cfg, 4000, 0.2)
    assert clean.train_x.shape == (4000, s["seq_len"] + 1) and (clean.train_x[:, 0] == 2).all()
    assert set(np.unique(clean.train_x[:, 1:])) == {0, 1}
    # labels are the majority of the hidden support
    sup = clean.extra["support"]
    assert len(sup) == s["support"]
    np.testing.assert_array_equal(clean.train_y, (clean.train_x[:, 1:][:, sup].sum(1) > s["support"] // 2))
    # same inputs at every noise level; the noise rate is ~0.2 on train and on test
    np.testing.assert_array_equal(clean.train_x, noisy.train_x)
    np.testing.assert_array_equal(clean.test_x, noisy.test_x)
    assert abs(np.mean(clean.train_y != noisy.train_y) - 0.2) < 0.03
    assert abs(np.mean(noisy.test_y != noisy.clean_test_y) - 0.2) < 0.03
    # a smaller pool is a prefix of a larger one (nested training sets, same test set)
    small = e3.make_task_data(cfg, 100, 0.2)
    np.testing.assert_array_equal(small.train_x, noisy.train_x[:100])
    np.testing.assert_array_equal(small.train_y, noisy.train_y[:100])
    np.testing.assert_array_equal(small.test_y, noisy.test_y)
    # another seed: another task instance
    other = e3.make_task_data(e3.quick_config(seed=6), 100, 0.0)
    assert not np.array_equal(other.train_x, small.train_x)


def test_masked_synthetic_noise_replaces_words_only():
    cfg = e3.quick_config(task="masked-synthetic")
    a = e3.make_task_data(cfg, 50, 0.0)
    b = e3.make_task_data(cfg, 50, 0.3)
    special = a.train_x < 5
    np.testing.assert_array_equal(a.train_x[special], b.train_x[special])
    changed = np.mean(a.train_x[~special] != b.train_x[~special])
    assert 0.2 < changed < 0.35  # 0.3, minus replacements that drew the same word
    np.testing.assert_array_equal(b.clean_test_x, a.test_x)
    small = e3.make_task_data(cfg, 20, 0.3)  # nested training sets, same test set
    np.testing.assert_array_equal(small.train_x, b.train_x[:20])
    np.testing.assert_array_equal(small.test_x, b.test_x)
