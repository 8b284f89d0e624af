"""Hugging Face BERT encoders as E2 (synthetic family) and E3 train them: the config, BERT's
masking, the training loop and the evaluation, in one place.

* :func:`bert_config` — a ``BertConfig`` with GELU, post-LayerNorm, one token type, heads of
  width ``head_dim`` and ``d_ff = ff_mult · hidden_size``.
* :func:`mask_tokens` — BERT's 15 % / 80-10-10 masking of the non-special tokens of the
  synthetic language.
* :func:`mlm_batches` / :func:`classification_batches` — mini-batches drawn with replacement
  from a seeded generator; :func:`train_loop` runs them through the shared AdamW recipe of
  :mod:`specbound.experiments.training`.
* :func:`nll_and_correct` — summed cross-entropy (float64), correct predictions and scored
  positions over fixed chunks (masked LM: positions with label −100 are not scored).
* :func:`quiet_transformers` / :func:`save_quietly` — transformers' log messages and progress
  bars off inside a ``with`` block only; the previous settings come back afterwards (library
  code leaves process-wide state alone).

Bit-reproducibility matters here (goldens, Ray vs local): the order of the generator draws
(batch indices, then masks) and whether an ``attention_mask`` is passed are part of each
experiment's recipe and are kept as arguments, not unified.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from specbound.experiments.synthetic_language import MASK, PAD, SPECIAL_TOKENS
from specbound.experiments.training import adamw_warmup_linear, optimizer_step

__all__ = [
    "bert_config",
    "classification_batches",
    "mask_tokens",
    "mlm_batches",
    "nll_and_correct",
    "quiet_transformers",
    "save_quietly",
    "train_loop",
]

#: ``batch(step) -> keyword arguments of the model's forward`` (``input_ids``, ``labels``, …).
BatchFn = Callable[[int], Mapping[str, torch.Tensor]]


def bert_config(*, vocab_size: int, hidden_size: int, num_layers: int, head_dim: int, ff_mult: int,
                max_positions: int, pad_token_id: int, dropout: float = 0.0,
                num_labels: int | None = None) -> Any:  # -> transformers.BertConfig
    """``BertConfig`` of an encoder with ``num_layers`` layers of width ``hidden_size``,
    ``hidden_size / head_dim`` heads, ``d_ff = ff_mult · hidden_size``, GELU, post-LN,
    ``type_vocab_size = 1``. ``num_labels`` is passed only when given (sequence classification)."""
    from transformers import BertConfig

    if hidden_size % head_dim:
        raise ValueError(f"hidden size {hidden_size} is not a multiple of the head width {head_dim}")
    extra = {} if num_labels is None else {"num_labels": num_labels}
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // head_dim,
        intermediate_size=ff_mult * hidden_size,
        hidden_act="gelu",
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_positions,
        type_vocab_size=1,
        pad_token_id=pad_token_id,
        **extra,
    )


def mask_tokens(ids: torch.Tensor, vocab_size: int, mask_prob: float, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ``ids`` (``[n, T]`` int64): returns ``(inputs, labels)``, both ``[n, T]``,
    with ``labels = -100`` where nothing is predicted.

    ``mask_prob`` of the non-special tokens (ids ``>= len(SPECIAL_TOKENS)``) are chosen; of those
    80 % become ``[MASK]``, 10 % a random word, 10 % stay. Draws, in order: one uniform per
    position (chosen), one uniform per position (which replacement), one random word per position.
    """
    n_special = len(SPECIAL_TOKENS)
    candidates = ids >= n_special
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & candidates
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = ids.clone()
    u = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (u < 0.8)] = MASK
    rand_pos = chosen & (u >= 0.8) & (u < 0.9)
    random_words = torch.randint(n_special, vocab_size, ids.shape, generator=generator)
    inputs[rand_pos] = random_words[rand_pos]
    return inputs, labels


def _forward_kwargs(x: torch.Tensor, attention_mask: bool) -> dict[str, torch.Tensor]:
    return {"input_ids": x, "attention_mask": (x != PAD).long()} if attention_mask else {"input_ids": x}


def mlm_batches(corpus: torch.Tensor, batch_size: int, vocab_size: int, mask_prob: float,
                generator: torch.Generator, *, attention_mask: bool = False,
                device: str | torch.device = "cpu") -> BatchFn:
    """Masked-LM batches: per step, ``batch_size`` row indices of ``corpus`` (``[n, T]``) drawn
    with replacement from ``generator``, then :func:`mask_tokens` from the same generator.
    ``attention_mask``: also pass ``attention_mask = (ids != [PAD])``."""

    def batch(step: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(corpus), (batch_size,), generator=generator)
        x, y = mask_tokens(corpus[idx], vocab_size, mask_prob, generator)
        x, y = x.to(device), y.to(device)
        return {**_forward_kwargs(x, attention_mask), "labels": y}

    return batch


def classification_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
                           ) -> BatchFn:
    """Sequence-classification batches: ``batch_size`` indices of ``x`` (``[n, T]``) / ``y``
    (``[n]``) per step, drawn with replacement from ``generator``."""

    def batch(step: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(x), (batch_size,), generator=generator)
        return {"input_ids": x[idx], "labels": y[idx]}

    return batch


def train_loop(model: torch.nn.Module, batch: BatchFn, *, steps: int, lr: float, weight_decay: float,
               warmup_frac: float, where: str = "", progress: Callable[[int, int], None] | None = None
               ) -> list[float]:
    """``steps`` updates of ``model`` (in train mode) on ``batch(step)`` with the AdamW recipe of
    :func:`~specbound.experiments.training.adamw_warmup_linear`; returns the per-step losses.

    A non-finite loss raises ``FloatingPointError`` ("… at step k{where}"). ``progress(step,
    steps)`` is called after every update. The model is left in train mode."""
    opt, sched = adamw_warmup_linear(model, lr, weight_decay, steps, warmup_frac)
    losses: list[float] = []
    model.train()
    for step in range(steps):
        out = model(**batch(step))
        losses.append(optimizer_step(out.loss, model, opt, sched, f"at step {step}{where}"))
        if progress is not None:
            progress(step + 1, steps)
    return losses


@torch.no_grad()
def nll_and_correct(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, chunk: int, *,
                    attention_mask: bool = False, device: str | torch.device = "cpu") -> tuple[float, int, int]:
    """``(summed cross-entropy in nats, number correct, number scored)`` of ``model`` (put in
    eval mode) on ``inputs`` ``[n, T]`` in chunks of ``chunk`` rows.

    ``labels``: ``[n]`` (sequence classification) or ``[n, T]`` (masked LM; positions with
    −100 are not scored). Log-probabilities in float64; the sums are accumulated chunk by
    chunk in a fixed order (deterministic)."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for a in range(0, len(inputs), chunk):
        x, y = inputs[a:a + chunk].to(device), labels[a:a + chunk]
        logits = model(**_forward_kwargs(x, attention_mask)).logits.cpu()
        if y.ndim > 1:
            m = y != -100
            logits, y = logits[m], y[m]
        lp = torch.log_softmax(logits.double(), dim=-1)
        loss += float(-lp.gather(1, y[:, None]).sum())
        correct += int((lp.argmax(-1) == y).sum())
        count += len(y)
    return loss, correct, count


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Inside the block, transformers' logger reports errors only; its previous verbosity is
    restored afterwards (instead of ``set_verbosity_error()`` for the whole process)."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity(hf_logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)


def save_quietly(model: Any, out_dir: Path) -> None:
    """``save_pretrained`` as safetensors without transformers' progress bar (restored after)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
