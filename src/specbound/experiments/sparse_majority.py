"""Experiment E1: sparse majority (Trauger & Tewari 2024), ``shared/spec/experiments.md`` §E1.

Does the generalisation gap, the entrywise ℓ1 norm of the weights, or any bound proxy grow
with the sequence length T?

Protocol (and where this implementation deviates; every deviation is also recorded in
``config.json`` under ``"deviations"``):

* Data per run (seeded): ``x ∈ {0,1}^T`` uniform, a fixed support ``S`` of ``s = 9``
  positions, label ``y = 1`` iff at least 5 of the 9 bits in S are 1. Token embeddings
  ("0", "1", "[CLS]") in R^64: Gaussian vectors, Gram–Schmidt orthogonalised, each scaled to
  unit ℓ1 norm. [CLS] is appended last (position T); the sinusoidal positional encoding of
  Vaswani et al. (``PE[t, 2i] = sin(t / 10000^{2i/d})``, ``PE[t, 2i+1] = cos(…)``) is added at
  every position 0..T. Embeddings are fixed (not trained).
* Model: one multi-head self-attention layer (2 heads, Keras-style ``key_dim`` 64 per head,
  value dim 64, output projection back to 64, with biases, scores scaled by 1/sqrt(64)),
  ReLU, a linear layer 64→64, a linear read-out of the [CLS] position to 2 logits. No
  residual, no LayerNorm. Kernels Glorot-uniform, biases zero (Keras defaults).
* Training: SGD, lr 0.01, momentum 0.9 (PyTorch form ``v ← μv + g``, ``θ ← θ − lr·v``),
  ``lr_t = max(0.01 · 0.999^t, 0.001)``; **full-batch** steps on the 300 training samples
  (the original used mini-batches); stop at the first state with 100% training accuracy or at
  the epoch cap; keep the weights with the best loss on a **separate validation set** (the
  original selected on its test set). Candidates for selection are the states after each
  update (epochs 1..E), as a per-epoch checkpoint callback would see them.
* Measured per run on fresh test data (10,000 samples): train/test accuracy and loss and
  their gaps; ℓ1 norm of every weight (biases separately) and their sum; spectral/Frobenius/
  (2,1) norms of the canonical matrices; every bound proxy of :func:`specbound.analyze`.

Engineering:

* **CLS-only forward.** With one layer, no residual and a read-out of the [CLS] position,
  only the [CLS] query row of the attention matters, and every input row is
  ``E[token] + PE[t]``. :func:`forward_cls` uses both facts (projections of the 3 embeddings
  and of the T+1 positional codes instead of n·(T+1) token rows); it computes the same
  function as the textbook :func:`forward_reference` (tests check agreement to 1e-10 in
  float64), at a fraction of the cost.
* **Batched runs.** All runs of one length T are trained together as one model whose
  parameters carry a leading run dimension ``R`` (``torch.bmm``/``einsum``). A run's
  initialisation and data come from its own seed stream; its loss enters the total as a
  separate summand; the optimiser is elementwise; finished runs leave the batch. Tests check
  that a run trained alone and the same run trained in a batch with others give bit-identical
  results on CPU (same thread count).

Library code: no printing; progress goes to an optional callback.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specbound.experiments.common import (
    ProgressCallback,
    ProgressEvent,
    load_keyed,
    run_rng,
    save_keyed,
    slope_with_ci,
    torch_threads,
    versions,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "SparseMajorityConfig",
    "SparseMajorityData",
    "RunSpec",
    "RunResult",
    "QUICK_DEVIATIONS",
    "PROTOCOL_DEVIATIONS",
    "quick_config",
    "generate_data",
    "make_embeddings",
    "sinusoidal_encoding",
    "init_params",
    "forward_cls",
    "forward_reference",
    "model_inputs",
    "run_data",
    "run_init",
    "majority_labels",
    "train_runs",
    "evaluate",
    "to_transformer_weights",
    "weight_norms",
    "bound_columns",
    "run_study",
    "compute_trends",
    "make_plots",
]

CLS = 2  #: token id of [CLS]; "0" and "1" are ids 0 and 1
PARAM_NAMES = ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o", "W_in", "b_in", "W_out", "b_out")
KERNELS = ("W_q", "W_k", "W_v", "W_o", "W_in", "W_out")
BIASES = ("b_q", "b_k", "b_v", "b_o", "b_in", "b_out")

#: How the implementation departs from the written protocol (always, not only in --quick).
PROTOCOL_DEVIATIONS = [
    "full-batch gradient steps on the training set (the original used mini-batches)",
    "model selection on a separate validation set (the original selected on its test set)",
    "epoch cap (max_epochs) instead of the original 200,000; runs that stop at the cap are "
    "flagged stopped_at_cap with the training accuracy they reached",
    "PyTorch SGD momentum form v <- mu*v + g, theta <- theta - lr*v",
]

#: What ``--quick`` changes on top of :data:`PROTOCOL_DEVIATIONS`.
QUICK_DEVIATIONS = [
    "lengths T in {16, 32, 64} instead of {16, ..., 512}",
    "2 seeds per length instead of 4",
    "epoch cap 300 instead of 16,000 (every run stops at the cap, near chance training accuracy: the quick preset checks the machinery, not the science)",
    "validation set 300 and test set 2,000 samples instead of 500 and 10,000",
]


# =========================================================================== configuration


@dataclass(frozen=True)
class SparseMajorityConfig:
    """Everything that determines the study's numbers (plus ``num_threads``, which can change
    floating-point results, and ``quick``, which is informational).

    Defaults are sized to a 2-core machine: the full sweep (6 lengths x 4 seeds, cap 16,000
    full-batch epochs, 1 thread) took 41 minutes here; with the cap at 4,000 it took
    13 minutes but the runs at T >= 128 stayed near chance training accuracy.
    """

    lengths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    n_seeds: int = 4
    seed: int = 0
    n_train: int = 300
    n_val: int = 500
    n_test: int = 10000
    max_epochs: int = 16000
    s: int = 9
    d_model: int = 64
    n_heads: int = 2
    key_dim: int = 64
    d_hidden: int = 64
    n_classes: int = 2
    lr: float = 0.01
    momentum: float = 0.9
    lr_decay: float = 0.999
    lr_min: float = 0.001
    dtype: str = "float32"
    num_threads: int = 1
    eval_chunk: int = 2000
    quick: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an unusable configuration."""
        if not self.lengths:
            raise ValueError("lengths must not be empty")
        if len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"lengths contain duplicates: {list(self.lengths)}")
        for T in self.lengths:
            if not isinstance(T, int) or T < self.s:
                raise ValueError(f"every length T must be an integer >= s = {self.s}, got {T}")
        for name in ("n_seeds", "n_train", "n_val", "n_test", "max_epochs", "num_threads", "eval_chunk"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if self.s % 2 == 0:
            raise ValueError("s must be odd (majority of s bits)")
        if self.dtype not in ("float32", "float64"):
            raise ValueError("dtype must be float32 or float64")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float32 if self.dtype == "float32" else torch.float64

    def run_key(self, T: int, seed_index: int) -> dict[str, Any]:
        """The fields that determine one run's numbers (used as its cache key)."""
        d = asdict(self)
        for k in ("lengths", "n_seeds", "quick", "eval_chunk"):
            d.pop(k)
        d.update(T=T, seed_index=seed_index, version=_CACHE_VERSION)
        return d


_CACHE_VERSION = 1


def quick_config(**overrides: Any) -> SparseMajorityConfig:
    """The ``--quick`` preset (see :data:`QUICK_DEVIATIONS`)."""
    base = dict(lengths=(16, 32, 64), n_seeds=2, max_epochs=300, n_val=300, n_test=2000, quick=True)
    base.update(overrides)
    return SparseMajorityConfig(**base)


# =========================================================================== data


def sinusoidal_encoding(n_positions: int, d: int) -> np.ndarray:
    """Sinusoidal positional encoding, shape ``[n_positions, d]`` (float64):
    ``PE[t, 2i] = sin(t / 10000^{2i/d})``, ``PE[t, 2i+1] = cos(t / 10000^{2i/d})``."""
    if d % 2:
        raise ValueError("d must be even")
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    i2 = np.arange(0, d, 2, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, i2 / d)
    pe = np.zeros((n_positions, d))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)
    return pe


def make_embeddings(rng: np.random.Generator, d: int, n_tokens: int = 3) -> np.ndarray:
    """``n_tokens`` Gaussian vectors in R^d, Gram–Schmidt orthogonalised (in order), each
    scaled to unit ℓ1 norm. Shape ``[n_tokens, d]``; rows are tokens "0", "1", "[CLS]"."""
    raw = rng.standard_normal((n_tokens, d))
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


# =========================================================================== model


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, size=(fan_in, fan_out))


def init_params(rng: np.random.Generator, cfg: SparseMajorityConfig) -> dict[str, np.ndarray]:
    """Keras-default initialisation of one run (row-vector kernels ``[in, out]``):

    ``W_q, W_k, W_v``: ``[d, H·key_dim]`` (Glorot over fan-in d and fan-out H·key_dim, as
    Keras' einsum dense does for ``[d, H, key_dim]``); ``W_o``: ``[H·key_dim, d]``;
    ``W_in``: ``[d, d_hidden]``; ``W_out``: ``[d_hidden, n_classes]``; biases zero.
    """
    d, hk = cfg.d_model, cfg.n_heads * cfg.key_dim
    p = {
        "W_q": _glorot(rng, d, hk), "W_k": _glorot(rng, d, hk), "W_v": _glorot(rng, d, hk),
        "W_o": _glorot(rng, hk, d), "W_in": _glorot(rng, d, cfg.d_hidden),
        "W_out": _glorot(rng, cfg.d_hidden, cfg.n_classes),
    }
    p.update(b_q=np.zeros(hk), b_k=np.zeros(hk), b_v=np.zeros(hk), b_o=np.zeros(d),
             b_in=np.zeros(cfg.d_hidden), b_out=np.zeros(cfg.n_classes))
    return {k: p[k] for k in PARAM_NAMES}


def forward_cls(params: dict[str, torch.Tensor], bits: torch.Tensor, x0: torch.Tensor,
                d_emb: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Logits of a batch of runs, computing only the [CLS] query (exact, see module doc).

    Every input row is ``x[i, t] = x0[t] + bits[i, t] · d_emb`` with ``x0[t] = PE[t] + E["0"]``
    for t < T, ``x0[T] = PE[T] + E[CLS]``, ``d_emb = E["1"] − E["0"]`` and ``bits[i, T] = 0``
    (see :func:`model_inputs`), so keys, values and scores are affine in the bit.

    ``params``: stacked, each with a leading run dimension R (``W_q``: ``[R, d, H·k]``, …).
    ``bits``: ``[R, n, T+1]`` float 0/1. ``x0``: ``[R, T+1, d]``. ``d_emb``: ``[R, d]``.
    Returns logits ``[R, n, n_classes]``.
    """
    R, n, T1 = bits.shape
    H = n_heads
    d, hk = params["W_q"].shape[-2:]
    k = hk // H
    q = (torch.bmm(x0[:, -1:, :], params["W_q"]).squeeze(1) + params["b_q"]).view(R, H, k) / math.sqrt(k)
    k0 = (torch.bmm(x0, params["W_k"]) + params["b_k"][:, None, :]).view(R, T1, H, k)
    dk = torch.bmm(d_emb[:, None, :], params["W_k"]).view(R, H, k)
    v0 = (torch.bmm(x0, params["W_v"]) + params["b_v"][:, None, :]).view(R, T1, H, k).transpose(1, 2)
    dv = torch.bmm(d_emb[:, None, :], params["W_v"]).view(R, H, 1, k)
    # product + sum, not einsum/matmul: those route a batch of one run through another kernel
    # (other rounding), which would make a run's numbers depend on its batch mates
    s0 = (k0 * q[:, None, :, :]).sum(-1).transpose(1, 2)  # [R, H, T+1]
    delta = (q * dk).sum(-1)  # [R, H] score change when the bit is 1
    scores = torch.addcmul(s0[:, :, None, :], bits[:, None, :, :], delta[:, :, None, None])  # [R, H, n, T+1]
    p = torch.softmax(scores, dim=-1)
    m1 = (p * bits[:, None, :, :]).sum(-1, keepdim=True)  # [R, H, n, 1] attention mass on 1-bits
    head = torch.matmul(p, v0) + m1 * dv  # [R, H, n, k]
    attn = torch.einsum("rhnk,rhkd->rnd", head, params["W_o"].view(R, H, k, d)) + params["b_o"][:, None, :]
    hid = torch.bmm(torch.relu(attn), params["W_in"]) + params["b_in"][:, None, :]
    return torch.bmm(hid, params["W_out"]) + params["b_out"][:, None, :]


def model_inputs(data: SparseMajorityData, split: str, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(bits [n, T+1], x0 [T+1, d], d_emb [d])`` of a split for :func:`forward_cls`."""
    x = getattr(data, f"x_{split}")
    bits = np.concatenate([x, np.zeros((x.shape[0], 1), dtype=x.dtype)], axis=1)
    x0 = data.pos_enc + data.embeddings[0][None]
    x0[-1] = data.pos_enc[-1] + data.embeddings[CLS]
    d_emb = data.embeddings[1] - data.embeddings[0]
    return (torch.as_tensor(bits, dtype=dtype), torch.as_tensor(x0, dtype=dtype),
            torch.as_tensor(d_emb, dtype=dtype))


def forward_reference(params: dict[str, torch.Tensor], x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Textbook forward of one run on embedded inputs, for checking :func:`forward_cls`.

    ``params``: unstacked (``W_q``: ``[d, H·k]``, …). ``x``: ``[n, T+1, d]`` inputs
    ``E[token] + PE``. Full self-attention over all positions, then ReLU, linear, read-out
    of position T. Returns ``[n, n_classes]``.
    """
    n, T1, d = x.shape
    hk = params["W_q"].shape[-1]
    H, k = n_heads, hk // n_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, T1, H, k).transpose(1, 2)  # [n, H, T+1, k]

    Q = split(x @ params["W_q"] + params["b_q"])
    K = split(x @ params["W_k"] + params["b_k"])
    Vv = split(x @ params["W_v"] + params["b_v"])
    A = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(k), dim=-1)
    out = (A @ Vv).transpose(1, 2).reshape(n, T1, hk) @ params["W_o"] + params["b_o"]
    hid = torch.relu(out) @ params["W_in"] + params["b_in"]
    return hid[:, -1, :] @ params["W_out"] + params["b_out"]


# =========================================================================== training


@dataclass(frozen=True)
class RunSpec:
    """One run: length ``T`` and seed index ``seed_index`` (its streams derive from
    ``(cfg.seed, T, seed_index)``)."""

    T: int
    seed_index: int


@dataclass
class RunResult:
    """Outcome of training one run. ``params``: selected (best validation loss) weights,
    unstacked float tensors; ``history``: per-epoch ``train_acc``, ``train_loss``,
    ``val_loss`` lists (index e = state after e updates); ``train_seconds``: wall time of the
    batch this run was trained in, up to the epoch the run finished."""

    spec: RunSpec
    params: dict[str, torch.Tensor]
    epochs: int
    best_epoch: int
    best_val_loss: float
    reached_train_acc: float
    stopped_at_cap: bool
    train_seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def _run_streams(cfg: SparseMajorityConfig, spec: RunSpec) -> tuple[np.random.Generator, np.random.Generator]:
    """(data stream, init stream) of a run: independent, and independent of other runs."""
    return run_rng(cfg.seed, spec.T, spec.seed_index, 0), run_rng(cfg.seed, spec.T, spec.seed_index, 1)


def run_data(cfg: SparseMajorityConfig, spec: RunSpec) -> SparseMajorityData:
    """The data of run ``spec`` (deterministic in ``cfg`` and ``spec``)."""
    return generate_data(spec.T, _run_streams(cfg, spec)[0], cfg.n_train, cfg.n_val, cfg.n_test,
                         cfg.d_model, cfg.s)


def run_init(cfg: SparseMajorityConfig, spec: RunSpec) -> dict[str, np.ndarray]:
    """The initial weights of run ``spec`` (deterministic in ``cfg`` and ``spec``)."""
    return init_params(_run_streams(cfg, spec)[1], cfg)


def _ce_acc(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run mean cross-entropy ``[R]`` and number correct ``[R]`` (int64)."""
    R, n, C = logits.shape
    ce = torch.nn.functional.cross_entropy(logits.reshape(R * n, C), y.reshape(R * n), reduction="none")
    correct = (logits.argmax(-1) == y).sum(-1)
    return ce.view(R, n).mean(-1), correct


def train_runs(cfg: SparseMajorityConfig, specs: Sequence[RunSpec],
               data: Sequence[SparseMajorityData] | None = None,
               progress: ProgressCallback | None = None, keep_history: bool = False,
               progress_every: int = 100) -> list[RunResult]:
    """Train runs of one length T together as one batched model (leading run dimension).

    Full-batch SGD with momentum; lr_t = max(lr·decay^t, lr_min) for the update from state t
    to t+1. State t is evaluated (train accuracy/loss, validation loss) before its update;
    a run stops at the first state with 100% training accuracy or after ``cfg.max_epochs``
    updates; the state with the lowest validation loss among states 1..stop is kept.
    Finished runs leave the batch. Returns results in the order of ``specs``.
    """
    if not specs:
        return []
    Ts = {sp.T for sp in specs}
    if len(Ts) != 1:
        raise ValueError(f"train_runs needs runs of one length T, got {sorted(Ts)}")
    T = specs[0].T
    dt = cfg.torch_dtype
    if data is None:
        data = [run_data(cfg, sp) for sp in specs]
    t0 = time.perf_counter()
    with torch_threads(cfg.num_threads):
        inits = [run_init(cfg, sp) for sp in specs]
        params = {k: torch.stack([torch.as_tensor(p[k], dtype=dt) for p in inits]) for k in PARAM_NAMES}
        vel = {k: torch.zeros_like(v) for k, v in params.items()}
        best = {k: v.clone() for k, v in params.items()}
        tr = [model_inputs(dd, "train", dt) for dd in data]
        va = [model_inputs(dd, "val", dt) for dd in data]
        b_tr = torch.stack([t[0] for t in tr])
        b_va = torch.stack([t[0] for t in va])
        x0 = torch.stack([t[1] for t in tr])
        d_emb = torch.stack([t[2] for t in tr])
        y_tr = torch.stack([torch.from_numpy(dd.y_train) for dd in data])
        y_va = torch.stack([torch.from_numpy(dd.y_val) for dd in data])
        n_tr = y_tr.shape[1]
        R = len(specs)
        active = list(range(R))  # original indices of the rows of the batch
        best_val = [math.inf] * R
        best_epoch = [0] * R
        hist: list[dict[str, list[float]]] = [{"train_acc": [], "train_loss": [], "val_loss": []} for _ in range(R)]
        results: list[RunResult | None] = [None] * R
        epoch = 0
        while active:
            for v in params.values():
                v.requires_grad_(True)
            logits = forward_cls(params, b_tr, x0, d_emb, cfg.n_heads)
            loss, correct = _ce_acc(logits, y_tr)
            with torch.no_grad():
                vloss, _ = _ce_acc(forward_cls(params, b_va, x0, d_emb, cfg.n_heads), y_va)
            loss_l, corr_l, vloss_l = loss.tolist(), correct.tolist(), vloss.tolist()
            # model selection on states 1..stop
            if epoch >= 1:
                improved = [vloss_l[i] < best_val[r] for i, r in enumerate(active)]
                if any(improved):
                    mask = torch.tensor(improved)
                    with torch.no_grad():
                        for k in PARAM_NAMES:
                            m = mask.view(-1, *([1] * (params[k].ndim - 1)))
                            best[k] = torch.where(m, params[k].detach(), best[k])
                    for i, r in enumerate(active):
                        if improved[i]:
                            best_val[r] = vloss_l[i]
                            best_epoch[r] = epoch
            if keep_history:
                for i, r in enumerate(active):
                    hist[r]["train_acc"].append(corr_l[i] / n_tr)
                    hist[r]["train_loss"].append(loss_l[i])
                    hist[r]["val_loss"].append(vloss_l[i])
            done = [i for i, r in enumerate(active)
                    if epoch >= 1 and (corr_l[i] == n_tr or epoch >= cfg.max_epochs)]
            grads = None
            if len(done) < len(active):
                grads = torch.autograd.grad(loss.sum(), [params[k] for k in PARAM_NAMES])
            elapsed = time.perf_counter() - t0
            for i in done:
                r = active[i]
                results[r] = RunResult(
                    spec=specs[r], params={k: best[k][i].detach().clone() for k in PARAM_NAMES},
                    epochs=epoch, best_epoch=best_epoch[r], best_val_loss=best_val[r],
                    reached_train_acc=corr_l[i] / n_tr, stopped_at_cap=corr_l[i] != n_tr,
                    train_seconds=elapsed, history=hist[r] if keep_history else {})
            keep = [i for i in range(len(active)) if i not in set(done)]
            if not keep:
                break
            lr = max(cfg.lr * cfg.lr_decay**epoch, cfg.lr_min)
            with torch.no_grad():
                g = dict(zip(PARAM_NAMES, grads, strict=True))
                if len(keep) < len(active):
                    idx = torch.tensor(keep)
                    params = {k: v.detach().index_select(0, idx) for k, v in params.items()}
                    vel = {k: v.index_select(0, idx) for k, v in vel.items()}
                    best = {k: v.index_select(0, idx) for k, v in best.items()}
                    g = {k: v.index_select(0, idx) for k, v in g.items()}
                    x0, d_emb, b_tr, y_tr = x0[idx], d_emb[idx], b_tr[idx], y_tr[idx]
                    b_va, y_va = b_va[idx], y_va[idx]
                    active = [active[i] for i in keep]
                else:
                    params = {k: v.detach() for k, v in params.items()}
                for k in PARAM_NAMES:
                    vel[k].mul_(cfg.momentum).add_(g[k])
                    params[k].sub_(lr * vel[k])
            epoch += 1
            if progress is not None and epoch % progress_every == 0:
                progress(ProgressEvent(kind="group", message=f"T={T}: epoch {epoch}, {len(active)} runs training",
                                       info={"T": T, "epoch": epoch, "active": len(active)}))
    return [r for r in results if r is not None]


@torch.no_grad()
def evaluate(params: dict[str, torch.Tensor], data: SparseMajorityData, split: str,
             cfg: SparseMajorityConfig) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of one run's ``params`` on ``split``, in fixed chunks of
    ``cfg.eval_chunk`` samples (deterministic; loss accumulated in float64)."""
    dt = cfg.torch_dtype
    stacked = {k: v.to(dt)[None] for k, v in params.items()}
    bits, x0, d_emb = model_inputs(data, split, dt)
    x0, d_emb = x0[None], d_emb[None]
    y = getattr(data, f"y_{split}")
    total_loss, total_correct = 0.0, 0
    with torch_threads(cfg.num_threads):
        for a in range(0, len(y), cfg.eval_chunk):
            yy = torch.from_numpy(y[a:a + cfg.eval_chunk])[None]
            logits = forward_cls(stacked, bits[None, a:a + cfg.eval_chunk], x0, d_emb, cfg.n_heads)
            ce = torch.nn.functional.cross_entropy(logits[0].double(), yy[0], reduction="sum")
            total_loss += float(ce)
            total_correct += int((logits[0].argmax(-1) == yy[0]).sum())
    return total_correct / len(y), total_loss / len(y)


# =========================================================================== analysis


def to_transformer_weights(params: dict[str, torch.Tensor], cfg: SparseMajorityConfig,
                           source: str = "sparse_majority") -> Any:
    """Adapter: one run's weights -> :class:`specbound.weights.canonical.TransformerWeights`.

    Mapping (row-vector orientation; recorded as machine-readable notes on ``ModelInfo``):
    L = 1, N = d_model = 64, H = H_kv = 2, d_h = key_dim = 64; ``W_Q[h] = W_q[:, h·k:(h+1)·k]``
    (``W_q`` is ``[N, H·k]``), likewise K and V; ``W_O[h] = W_o[h·k:(h+1)·k, :]``;
    ``M_in`` = the 64→64 linear layer (``[64, 64]``), ``M_out`` = the read-out (``[64, 2]``,
    so N_out = 2); activation ReLU (L_φ = 1). The 1/sqrt(k) score scale is not folded into
    ``W_Q`` (as for every other adapter). Biases are in ``extras`` (outside the proxies).
    """
    from specbound.weights.canonical import LayerWeights, ModelInfo, Note, TransformerWeights

    H, k, N = cfg.n_heads, cfg.key_dim, cfg.d_model
    p = {name: t.detach() for name, t in params.items()}

    def heads_in(w: torch.Tensor) -> torch.Tensor:  # [N, H·k] -> [H, N, k]
        return w.reshape(N, H, k).permute(1, 0, 2).contiguous()

    layer = LayerWeights(
        index=0,
        W_Q=heads_in(p["W_q"]), W_K=heads_in(p["W_k"]), W_V=heads_in(p["W_v"]),
        W_O=p["W_o"].reshape(H, k, N).contiguous(),
        M_in=p["W_in"].contiguous(), M_out=p["W_out"].contiguous(),
        names={"W_Q": "W_q", "W_K": "W_k", "W_V": "W_v", "W_O": "W_o", "M_in": "W_in", "M_out": "W_out"},
        extras={name: p[name] for name in BIASES},
    )
    notes = [
        Note.of("no_feedforward_activation_between",
                "Sparse-majority model (Trauger & Tewari 2024): y = M_out^T (M_in^T relu(MHSA(x)))_[CLS]; "
                "the ReLU acts on the attention output, before M_in (the 64->64 linear), and there is "
                "no activation between M_in and M_out; no residual, no LayerNorm. ReLU is 1-Lipschitz "
                "(use l_phi = 1)."),
        Note.of("readout_as_m_out", f"Here: the {cfg.d_hidden}x{cfg.n_classes} read-out of the [CLS] position."),
    ]
    info = ModelInfo(model_type="sparse_majority", n_layers=1, d_model=N, n_heads=H, n_kv_heads=H,
                     d_head=k, d_ff=cfg.d_hidden, source=source, activation="relu", notes=notes)
    return TransformerWeights.from_layers(info, [layer])


def weight_norms(params: dict[str, torch.Tensor], cfg: SparseMajorityConfig) -> dict[str, float]:
    """Norms computed here, independently of :func:`specbound.analyze` (float64):

    ``l1_<name>`` entrywise ℓ1 norm of every kernel and bias; ``l1_norm_sum`` = Σ over the six
    kernels (the quantity Trauger & Tewari track), ``l1_bias_sum``, ``l1_norm_sum_with_biases``;
    ``spec_/fro_/norm21_<M>`` for the canonical matrices M ∈ {QK_h, OV_h, M_in, M_out} and the
    full projection kernels W_q, W_k, W_v, W_o ((2,1) = sum of column ℓ2 norms, row-vector
    orientation).
    """
    p = {k: v.detach().to(torch.float64) for k, v in params.items()}
    out: dict[str, float] = {}
    for name in PARAM_NAMES:
        out[f"l1_{name}"] = float(p[name].abs().sum())
    out["l1_norm_sum"] = sum(out[f"l1_{k}"] for k in KERNELS)
    out["l1_bias_sum"] = sum(out[f"l1_{k}"] for k in BIASES)
    out["l1_norm_sum_with_biases"] = out["l1_norm_sum"] + out["l1_bias_sum"]
    H, k = cfg.n_heads, cfg.key_dim
    mats: dict[str, torch.Tensor] = {}
    for h in range(H):
        hs = slice(h * k, (h + 1) * k)
        mats[f"QK{h}"] = p["W_q"][:, hs] @ p["W_k"][:, hs].T
        mats[f"OV{h}"] = p["W_v"][:, hs] @ p["W_o"][hs, :]
    mats["M_in"], mats["M_out"] = p["W_in"], p["W_out"]
    for name in ("W_q", "W_k", "W_v", "W_o"):
        mats[name] = p[name]
    for name, m in mats.items():
        out[f"spec_{name}"] = float(torch.linalg.matrix_norm(m, ord=2))
        out[f"fro_{name}"] = float(torch.linalg.matrix_norm(m, ord="fro"))
        out[f"norm21_{name}"] = float(torch.linalg.vector_norm(m, dim=0).sum())
    return out


def analyze_available() -> bool:
    """Whether :func:`specbound.analyze` exists in this installation."""
    try:
        import specbound

        return callable(getattr(specbound, "analyze", None))
    except Exception:  # pragma: no cover
        return False


#: Columns derived here from a library bound (not bound families of the library).
DERIVED_BOUND_COLUMNS = {
    "log10_edelman_logT": "this experiment's construction: the library's Edelman proxy B_E times "
    "ln T, the sequence-length factor of Edelman et al. (2022) that the proxy omits (bounds.md §5); "
    "its growth in T is by construction",
}


def bound_columns(params: dict[str, torch.Tensor], cfg: SparseMajorityConfig, T: int,
                  source: str = "sparse_majority") -> dict[str, float]:
    """INTEGRATION POINT with the core API: ``log10_<bound name>`` for every bound family
    that :func:`specbound.analyze` reports (ReLU, so ``l_phi = 1``), plus
    :data:`DERIVED_BOUND_COLUMNS`. Returns ``{}`` when ``specbound.analyze`` is not available."""
    if not analyze_available():
        return {}
    import specbound

    report = specbound.analyze(to_transformer_weights(params, cfg, source), l_phi=1.0)
    out = {f"log10_{name}": float(b.log10_value) for name, b in sorted(report.bounds.items())}
    if "log10_edelman" in out:
        out["log10_edelman_logT"] = out["log10_edelman"] + math.log10(math.log(T))
    return out


# =========================================================================== study


def _cache_path(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / f"T{spec.T:04d}_s{spec.seed_index:03d}.pt"


def _load_cached(out: Path, cfg: SparseMajorityConfig, spec: RunSpec) -> dict[str, Any] | None:
    return load_keyed(_cache_path(out, spec), cfg.run_key(spec.T, spec.seed_index))


def _save_cached(out: Path, cfg: SparseMajorityConfig, res: RunResult, row: dict[str, Any]) -> None:
    save_keyed(_cache_path(out, res.spec), cfg.run_key(res.spec.T, res.spec.seed_index),
               {"params": res.params, "row": json.dumps(row)})


def _train_row(cfg: SparseMajorityConfig, res: RunResult, data: SparseMajorityData) -> dict[str, Any]:
    tr_acc, tr_loss = evaluate(res.params, data, "train", cfg)
    va_acc, va_loss = evaluate(res.params, data, "val", cfg)
    te_acc, te_loss = evaluate(res.params, data, "test", cfg)
    return {
        "T": res.spec.T, "seed": res.spec.seed_index, "epochs": res.epochs,
        "best_epoch": res.best_epoch, "reached_train_acc": res.reached_train_acc,
        "stopped_at_cap": res.stopped_at_cap,
        "train_acc": tr_acc, "val_acc": va_acc, "test_acc": te_acc,
        "train_loss": tr_loss, "val_loss": va_loss, "test_loss": te_loss,
        "acc_gap": tr_acc - te_acc, "loss_gap": te_loss - tr_loss,
        "train_seconds": res.train_seconds,
    }


def run_study(cfg: SparseMajorityConfig, out: str | Path, progress: ProgressCallback | None = None,
              plots: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole study and write ``runs.csv``, ``trends.csv``,
    ``config.json`` and plots to ``out``. Finished runs are cached in ``out/runs/`` (selected
    weights + training metrics) and reused when their configuration matches; norms and bounds
    are recomputed from the cached weights every time. The runs of one length are trained
    together and cached when they finish, so an interruption loses at most the length in
    progress.

    Returns ``{"runs": DataFrame, "trends": DataFrame, "config": dict, "files": [...]}``.
    """
    import pandas as pd

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    specs = [RunSpec(T, s) for T in cfg.lengths for s in range(cfg.n_seeds)]
    total = len(specs)
    emit = progress or (lambda ev: None)
    emit(ProgressEvent(kind="start", total=total, message=f"{total} runs"))
    have_bounds = analyze_available()
    rows: dict[RunSpec, dict[str, Any]] = {}
    n_done = 0
    n_cached = 0

    def finish(spec: RunSpec, params: dict[str, torch.Tensor], row: dict[str, Any], cached: bool) -> None:
        nonlocal n_done
        src = f"sparse_majority T={spec.T} seed={spec.seed_index}"
        full = dict(row)
        full.update(weight_norms(params, cfg))
        full.update(bound_columns(params, cfg, spec.T, src))
        rows[spec] = full
        n_done += 1
        emit(ProgressEvent(kind="run", done=n_done, total=total, cached=cached,
                           message=_run_line(full, cached), info=full))

    for T in cfg.lengths:
        todo: list[RunSpec] = []
        for spec in (sp for sp in specs if sp.T == T):
            blob = _load_cached(out, cfg, spec)
            if blob is None:
                todo.append(spec)
            else:
                n_cached += 1
                finish(spec, blob["params"], json.loads(blob["row"]), cached=True)
        if not todo:
            continue
        data = [run_data(cfg, sp) for sp in todo]
        by_spec = dict(zip(todo, data, strict=True))
        for res in train_runs(cfg, todo, data, progress=progress):
            row = _train_row(cfg, res, by_spec[res.spec])
            _save_cached(out, cfg, res, row)
            finish(res.spec, res.params, row, cached=False)

    runs = pd.DataFrame([rows[sp] for sp in specs])
    trends = compute_trends(runs)
    runs.to_csv(out / "runs.csv", index=False)
    trends.to_csv(out / "trends.csv", index=False)
    files = [str(out / "runs.csv"), str(out / "trends.csv")]
    if plots:
        files += [str(p) for p in make_plots(runs, out)]
    wall = time.perf_counter() - t_start
    meta = {
        "experiment": "E1 sparse majority (shared/spec/experiments.md)",
        "config": asdict(cfg),
        "seed": cfg.seed,
        "versions": versions(),
        "wall_time_seconds": wall,
        "runs_total": total,
        "runs_reused_from_cache": n_cached,
        "runs_stopped_at_cap": int(runs["stopped_at_cap"].sum()),
        "bounds_available": have_bounds,
        "bound_columns": [c for c in runs.columns if c.startswith("log10_")],
        "derived_bound_columns": {k: v for k, v in DERIVED_BOUND_COLUMNS.items() if k in runs.columns},
        "protocol_deviations": PROTOCOL_DEVIATIONS,
        "quick_deviations": QUICK_DEVIATIONS if cfg.quick else [],
        "trend_x": "log2(T): slopes are per doubling of T",
        "model_mapping_notes": [n.to_dict() for n in _mapping_notes(cfg)],
        "files": [Path(f).name for f in files] + ["config.json"],
    }
    if not have_bounds:
        meta["bounds_missing_reason"] = ("specbound.analyze is not available in this installation; "
                                         "bound columns (log10_<name>) are left out")
    write_json_atomic(out / "config.json", meta)
    files.append(str(out / "config.json"))
    emit(ProgressEvent(kind="end", done=n_done, total=total,
                       message=f"{total} runs ({n_cached} reused) in {wall:.1f} s"))
    return {"runs": runs, "trends": trends, "config": meta, "files": files}


def _mapping_notes(cfg: SparseMajorityConfig) -> list[Any]:
    zero = {k: torch.zeros(s) for k, s in _shapes(cfg).items()}
    return to_transformer_weights(zero, cfg).info.notes


def _shapes(cfg: SparseMajorityConfig) -> dict[str, tuple[int, ...]]:
    d, hk = cfg.d_model, cfg.n_heads * cfg.key_dim
    return {"W_q": (d, hk), "b_q": (hk,), "W_k": (d, hk), "b_k": (hk,), "W_v": (d, hk), "b_v": (hk,),
            "W_o": (hk, d), "b_o": (d,), "W_in": (d, cfg.d_hidden), "b_in": (cfg.d_hidden,),
            "W_out": (cfg.d_hidden, cfg.n_classes), "b_out": (cfg.n_classes,)}


def _run_line(row: dict[str, Any], cached: bool) -> str:
    bounds = " ".join(f"{k[6:]}=10^{row[k]:.2f}" for k in row if k.startswith("log10_"))
    cap = " (cap)" if row["stopped_at_cap"] else ""
    return (f"T={row['T']} seed={row['seed']}{' [cached]' if cached else ''}: "
            f"epochs={row['epochs']}{cap} train_acc={row['train_acc']:.3f} "
            f"test_acc={row['test_acc']:.3f} gap={row['acc_gap']:+.3f} "
            f"l1_sum={row['l1_norm_sum']:.1f} {bounds}").rstrip()


#: Columns that identify a run or describe its bookkeeping rather than a measured quantity.
_NOT_TRENDED = {"T", "seed", "stopped_at_cap", "train_seconds"}


def compute_trends(runs: Any, level: float = 0.95) -> Any:
    """Per numeric quantity of ``runs``: OLS slope against log2(T) over all runs (seeds as
    replicates) with a ``level`` t-interval. Columns: quantity, n, slope_per_doubling,
    ci_low, ci_high, ci_contains_zero, intercept, mean, std."""
    import pandas as pd

    x = np.log2(runs["T"].to_numpy(dtype=float))
    recs = []
    for col in runs.columns:
        if col in _NOT_TRENDED or not pd.api.types.is_numeric_dtype(runs[col]):
            continue
        y = runs[col].to_numpy(dtype=float)
        fit = slope_with_ci(x, y, level)
        recs.append({"quantity": col, "n": fit.n, "slope_per_doubling": fit.slope,
                     "ci_low": fit.ci_low, "ci_high": fit.ci_high,
                     "ci_contains_zero": fit.contains_zero, "intercept": fit.intercept,
                     "mean": float(np.nanmean(y)) if np.isfinite(y).any() else float("nan"),
                     "std": float(np.nanstd(y)) if np.isfinite(y).any() else float("nan")})
    return pd.DataFrame(recs)


def make_plots(runs: Any, out: str | Path) -> list[Path]:
    """PNG plots against T (log2 x-axis) with every seed as a dot and mean ± std as a line:
    the accuracy and loss gaps, the ℓ1-norm sum, train/test accuracy (how well the runs fit,
    which the other quantities depend on), and each ``log10_<bound>`` column.
    Uses the Agg backend; nothing is shown."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out)
    panels = [("acc_gap", "accuracy gap (train − test)"), ("loss_gap", "loss gap (test − train)"),
              ("l1_norm_sum", "ℓ1 norm sum of the kernels"),
              ("train_acc", "training accuracy (selected weights)"), ("test_acc", "test accuracy")]
    panels += [(c, f"log10 {c[6:]} proxy") for c in runs.columns if c.startswith("log10_")]
    files = []
    for col, label in panels:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        g = runs.groupby("T")[col]
        Ts = np.array(sorted(runs["T"].unique()), dtype=float)
        ax.scatter(runs["T"], runs[col], s=14, alpha=0.5, color="tab:blue", label="runs (seeds)")
        ax.errorbar(Ts, g.mean().reindex(Ts).to_numpy(), yerr=g.std(ddof=0).reindex(Ts).to_numpy(),
                    color="tab:red", marker="o", capsize=3, label="mean ± std")
        capped = runs[runs["stopped_at_cap"].astype(bool)]
        if len(capped):
            ax.scatter(capped["T"], capped[col], s=40, facecolors="none", edgecolors="k",
                       label="stopped at epoch cap")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.set_title(f"sparse majority: {col} vs T", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"plot_{col}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files
