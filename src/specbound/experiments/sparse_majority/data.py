"""E1 data: sinusoidal positional codes, orthogonal unit-ℓ1 token embeddings, and the
seeded sparse-majority bit strings of one run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


CLS = 2  #: token id of [CLS]; "0" and "1" are ids 0 and 1


def sinusoidal_encoding(n_positions: int, d: int) -> np.ndarray:
    """Sinusoidal positional encoding of the authors' script (traugerjacob/Transformer-Gen-Bounds
    ``run_experiment.py``, ``make_pe``), shape ``[n_positions, d]`` (float64):
    ``PE[t, i] = sin(t / 10000^{i/d})`` for even ``i`` and ``cos(t / 10000^{i/d})`` for odd ``i``
    (their exponent is ``i/d`` for every column, not Vaswani et al.'s ``2⌊i/2⌋/d``)."""
    if d % 2:
        raise ValueError("d must be even")
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    i = np.arange(d, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, i / d)
    pe = np.cos(angle)
    pe[:, 0::2] = np.sin(angle[:, 0::2])
    return pe


def make_embeddings(rng: np.random.Generator, d: int, n_tokens: int = 3) -> np.ndarray:
    """``n_tokens`` vectors drawn U(−1, 1)^d (as in the authors' script), Gram–Schmidt
    orthogonalised in order, each then scaled to unit ℓ1 norm. Shape ``[n_tokens, d]``; rows
    are tokens "0", "1", "[CLS]"."""
    raw = rng.uniform(-1.0, 1.0, size=(n_tokens, d))
    out = np.zeros_like(raw)
    for i in range(n_tokens):
        v = raw[i].copy()
        for j in range(i):  # modified Gram–Schmidt against the (unit-l2) previous vectors
            u = out[j] / np.linalg.norm(out[j])
            v -= (v @ u) * u
        out[i] = v / np.abs(v).sum()
    return out


@dataclass
class SparseMajorityData:
    """One run's data. ``x_*``: ``[n, T]`` int64 bits; ``y_*``: ``[n]`` int64 labels;
    ``support``: the sorted positions S (``[s]``); ``embeddings``: ``[3, d]`` (rows "0",
    "1", "[CLS]"); ``pos_enc``: ``[T + 1, d]`` ([CLS] at position T)."""

    T: int
    support: np.ndarray
    embeddings: np.ndarray
    pos_enc: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def tokens(self, split: str) -> np.ndarray:
        """``[n, T + 1]`` token ids of a split with [CLS] appended last."""
        x = getattr(self, f"x_{split}")
        return np.concatenate([x, np.full((x.shape[0], 1), CLS, dtype=x.dtype)], axis=1)

    def embed(self, split: str) -> np.ndarray:
        """``[n, T + 1, d]`` model inputs ``E[token] + PE[position]`` of a split."""
        return self.embeddings[self.tokens(split)] + self.pos_enc[None]


def majority_labels(x: np.ndarray, support: np.ndarray) -> np.ndarray:
    """``[n]`` labels: 1 iff more than half of the bits of ``x[:, support]`` are 1."""
    return (x[:, support].sum(axis=1) * 2 > len(support)).astype(np.int64)


def generate_data(T: int, rng: np.random.Generator, n_train: int, n_val: int, n_test: int,
                  d: int = 64, s: int = 9) -> SparseMajorityData:
    """Draw one run's data: support S (``s`` distinct positions of ``0..T-1``), embeddings,
    and independent uniform bit strings for train/validation/test, labelled by majority of S."""
    if T < s:
        raise ValueError(f"T = {T} is smaller than s = {s}")
    support = np.sort(rng.choice(T, size=s, replace=False)).astype(np.int64)
    emb = make_embeddings(rng, d)
    pe = sinusoidal_encoding(T + 1, d)
    xs = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        x = rng.integers(0, 2, size=(n, T), dtype=np.int64)
        xs[split] = (x, majority_labels(x, support))
    return SparseMajorityData(T, support, emb, pe, xs["train"][0], xs["train"][1],
                              xs["val"][0], xs["val"][1], xs["test"][0], xs["test"][1])
