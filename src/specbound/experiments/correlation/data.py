"""E3 data: the training pool (nested prefixes) and the test sets of one label-noise level,
for the sparse-majority and the masked-synthetic task (streams depend on the seed only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from specbound.experiments.common import run_rng
from specbound.experiments.correlation.config import SweepConfig


_SM_CLS, _SM_PAD = 2, 3  # sparse majority token ids: bits 0 and 1, [CLS], an unused [PAD]


@dataclass
class TaskData:
    """Training pool (nested prefixes) and test set of one noise level, both drawn from the
    noisy distribution (the one the gap refers to), plus the clean test set."""

    train_x: np.ndarray
    train_y: np.ndarray   # sparse majority: labels [n]; masked: unused
    test_x: np.ndarray
    test_y: np.ndarray
    vocab_size: int
    clean_test_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clean_test_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extra: dict[str, Any] = field(default_factory=dict)


def make_task_data(cfg: SweepConfig, pool: int, label_noise: float) -> TaskData:
    """The data of every model with noise level ``label_noise`` (streams depend on the seed only)."""
    s = cfg.settings_dict
    if cfg.task == "sparse-majority":
        T = s["seq_len"]
        support = np.sort(run_rng(cfg.seed, 3, 0).choice(T, size=s["support"], replace=False))
        # uniform doubles are drawn one after the other, so a smaller pool is a prefix of a larger one
        bits_tr = (run_rng(cfg.seed, 3, 3).random((pool, T)) < 0.5).astype(np.int64)
        bits_te = (run_rng(cfg.seed, 3, 4).random((s["n_test"], T)) < 0.5).astype(np.int64)
        flip_tr = run_rng(cfg.seed, 3, 1).random(pool)
        flip_te = run_rng(cfg.seed, 3, 2).random(s["n_test"])

        def ids(bits: np.ndarray) -> np.ndarray:
            return np.concatenate([np.full((len(bits), 1), _SM_CLS, dtype=np.int64), bits], axis=1)

        y_tr = (bits_tr[:, support].sum(1) * 2 > s["support"]).astype(np.int64)
        y_te = (bits_te[:, support].sum(1) * 2 > s["support"]).astype(np.int64)
        return TaskData(ids(bits_tr), np.where(flip_tr < label_noise, 1 - y_tr, y_tr),
                        ids(bits_te), np.where(flip_te < label_noise, 1 - y_te, y_te), vocab_size=4,
                        clean_test_x=ids(bits_te), clean_test_y=y_te, extra={"support": support.tolist()})
    from specbound.experiments.synthetic_language import SPECIAL_TOKENS, SyntheticLanguage

    lang = SyntheticLanguage(s["language_seed"])
    train = lang.corpus(pool, s["seq_len"], seed=1000 + 2 * cfg.seed)
    test = lang.corpus(s["n_test"], s["seq_len"], seed=1001 + 2 * cfg.seed)

    def corrupt(ids: np.ndarray, stream: int) -> np.ndarray:
        u = run_rng(cfg.seed, 4, stream, 0).random(ids.shape)  # row-major draws: nested prefixes
        n_words = lang.vocab_size - len(SPECIAL_TOKENS)
        words = len(SPECIAL_TOKENS) + np.minimum((run_rng(cfg.seed, 4, stream, 1).random(ids.shape) * n_words)
                                                 .astype(np.int64), n_words - 1)
        return np.where((u < label_noise) & (ids >= len(SPECIAL_TOKENS)), words, ids)

    return TaskData(corrupt(train, 0), np.zeros(0), corrupt(test, 1), np.zeros(0), vocab_size=lang.vocab_size,
                    clean_test_x=test)
