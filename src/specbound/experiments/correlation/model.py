"""E3 models: the BERT encoder of a grid point (initial weights depend on (seed, depth,
width) only), its training and its evaluation, on :mod:`specbound.experiments.hf_bert`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from specbound.experiments import hf_bert
from specbound.experiments.common import run_rng
from specbound.experiments.correlation.config import SweepConfig
from specbound.experiments.correlation.data import _SM_PAD, TaskData

__all__ = ["EVAL_CHUNK", "bert_config", "evaluate", "new_model", "train"]

EVAL_CHUNK = 500  #: evaluation sequences per forward pass


def bert_config(cfg: SweepConfig, hp: Mapping[str, Any], vocab_size: int) -> Any:  # -> transformers.BertConfig
    """The ``BertConfig`` of grid point ``hp`` (no dropout; sparse majority: one more position
    for [CLS] and two labels)."""
    from specbound.experiments.synthetic_language import PAD

    s = cfg.settings_dict
    sm = cfg.task == "sparse-majority"
    return hf_bert.bert_config(vocab_size=vocab_size, hidden_size=hp["width"], num_layers=hp["depth"],
                               head_dim=s["head_dim"], ff_mult=s["ff_mult"],
                               max_positions=s["seq_len"] + (1 if sm else 0),
                               pad_token_id=_SM_PAD if sm else PAD, dropout=0.0, num_labels=2)


def new_model(cfg: SweepConfig, hp: Mapping[str, Any], vocab_size: int) -> Any:
    """The initial model: its weights depend on (seed, depth, width) only (the global torch
    generator is forked, so the caller's stream is untouched)."""
    import torch
    from transformers import BertForMaskedLM, BertForSequenceClassification

    cls = BertForSequenceClassification if cfg.task == "sparse-majority" else BertForMaskedLM
    with torch.random.fork_rng(devices=[]), hf_bert.quiet_transformers():
        torch.manual_seed(int(run_rng(cfg.seed, 5, hp["depth"], hp["width"]).integers(2**62)))
        model = cls(bert_config(cfg, hp, vocab_size))
    return model


def train(model: Any, cfg: SweepConfig, hp: Mapping[str, Any], data: TaskData) -> list[float]:
    """Train ``model`` on the first ``n_train`` samples of the pool for ``steps`` mini-batches
    (indices, and masks for the masked task, from one generator seeded by the seed); returns the
    per-step losses and leaves the model in eval mode."""
    import torch

    s = cfg.settings_dict
    n, steps = hp["n_train"], hp["steps"]
    x_all = torch.from_numpy(data.train_x[:n])
    gen = torch.Generator().manual_seed(int(run_rng(cfg.seed, 6).integers(2**62)))
    if cfg.task == "sparse-majority":
        batches = hf_bert.classification_batches(x_all, torch.from_numpy(data.train_y[:n]), s["batch_size"], gen)
    else:
        batches = hf_bert.mlm_batches(x_all, s["batch_size"], data.vocab_size, s["mask_prob"], gen)
    losses = hf_bert.train_loop(model, batches, steps=steps, lr=hp["lr"], weight_decay=hp["weight_decay"],
                                warmup_frac=s["warmup_frac"])
    model.eval()
    return losses


def evaluate(model: Any, cfg: SweepConfig, x: np.ndarray, y: np.ndarray, vocab_size: int,
             mask_seed: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on ``x`` (labels ``y``; masked task: fixed masks drawn
    from ``mask_seed``, ``y`` unused)."""
    import torch

    s = cfg.settings_dict
    xt = torch.from_numpy(x)
    if cfg.task == "masked-synthetic":
        gen = torch.Generator().manual_seed(mask_seed)
        xt, yt = hf_bert.mask_tokens(xt, vocab_size, s["mask_prob"], gen)
    else:
        yt = torch.from_numpy(y)
    loss, correct, count = hf_bert.nll_and_correct(model, xt, yt, EVAL_CHUNK)
    if count == 0:
        raise ValueError(f"no token of the {len(x)} evaluation sequences was masked; raise settings.n_test "
                         "(or n_train) so that accuracy and loss are defined")
    return correct / count, loss / count
