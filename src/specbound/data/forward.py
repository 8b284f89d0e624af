"""The forward pass over batches and the per-sequence quantities of bounds.md §8.

Sequences are sorted by length, cut into batches of ``batch_size`` and padded on the right
(attention mask 0 on the padding), so every real token keeps the positions 0..t−1 it has
alone. For each sequence of t real tokens, layer ℓ and query head h:

* ``P[ℓ,h]`` = the model's attention probabilities restricted to the t real tokens
  (``probs[b, h, :t, :t]``; the padding keys are masked, so each row still sums to 1);
* ``S[ℓ,h] = Q Kᵀ`` (t × t) from the model's own query and key of head h (K of KV group
  ``h // (H / H_kv)``), singular values by the factored route (:func:`factored_svdvals`);
* the row lengths (keys row i may attend to) are read from the model's own mask;
* ``X_ℓ`` = the hidden state entering layer ℓ (``hidden_states[ℓ]``, t × N), and the output of
  layer ℓ (``hidden_states[ℓ + 1]``; for the last layer the model's final hidden state as it
  returns it, i.e. after the final norm of pre-norm models).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from specbound.data.model import Captured, LoadedModel, capture_attention
from specbound.data.spectral import entropies, factored_svdvals, gram_svdvals, measures_of, spectrum
from specbound.errors import InputError

__all__ = ["MEASURES", "SEQUENCE_COLUMNS", "SequenceStats", "run_pass"]

MEASURES = ("erank", "stable_rank", "rank", "k90")
#: the per-(sequence, layer, head) quantities, in the order of sequences.csv
SEQUENCE_COLUMNS = [f"{m}_{q}" for m in ("P", "S") for q in MEASURES] + ["entropy", "norm_entropy"]


@dataclass
class SequenceStats:
    """The §8 quantities of one sequence: ``values [L, H, len(SEQUENCE_COLUMNS)]``,
    ``hidden [L]`` (effective rank of the input of each layer), ``hidden_out [L]`` (of its
    output), ``n_tokens`` t, ``causal`` (whether the mask hid any later token)."""

    index: int
    n_tokens: int
    values: np.ndarray
    hidden: np.ndarray
    hidden_out: np.ndarray
    causal: bool


def _masked(mask: torch.Tensor) -> torch.Tensor:
    """Boolean ``True`` where an additive (or boolean keep-) mask hides a key."""
    if mask.dtype == torch.bool:
        return ~mask
    return mask < 0.5 * torch.finfo(mask.dtype).min


def _group_of(n_heads: int, n_kv: int, device: torch.device) -> torch.Tensor:
    if n_kv <= 0 or n_heads % n_kv:
        raise InputError(f"{n_heads} query heads cannot share {n_kv} key heads evenly.")
    return torch.arange(n_heads, device=device) // (n_heads // n_kv)


def _stats(calls: list[Captured], hidden: tuple[torch.Tensor, ...], lens: list[int]) -> Iterator[tuple]:
    """Per-sequence quantities of one right-padded batch (true lengths ``lens``), in one pass: every
    padded row and column is set to zero, which leaves the singular values of each sequence's own
    matrices (plus zeros) and their entropies unchanged (see :func:`measures_of`)."""
    L = len(calls)
    dev = calls[0].probs.device
    T = calls[0].probs.shape[-1]
    t = torch.as_tensor(lens, device=dev)
    real = torch.arange(T, device=dev)[None, :] < t[:, None]  # [B, T]
    pair = (real[:, :, None] & real[:, None, :])[:, None, None]  # [B, 1, 1, T, T]
    p = torch.stack([c.probs for c in calls], 1).to(torch.float64) * pair  # [B, L, H, T, T]
    H = p.shape[2]
    rows = real[:, None, None, :, None]
    g = _group_of(H, calls[0].key.shape[1], dev)
    q = torch.stack([c.query for c in calls], 1).to(torch.float64) * rows  # [B, L, H, T, d]
    k = torch.stack([c.key[:, g] for c in calls], 1).to(torch.float64) * rows
    masked = []
    for c in calls:
        if c.mask is None:
            masked.append(torch.zeros(len(lens), T, T, dtype=torch.bool, device=dev))
        else:
            m = c.mask[:, 0] if c.mask.shape[1] == 1 else c.mask.amax(1)
            masked.append(_masked(m[:, -T:, -T:]))
    hid = torch.stack(masked, 1) | ~pair[:, :, 0]  # [B, L, T, T]: hidden keys, padding included
    row_len = (~hid).sum(-1)  # [B, L, T] (0 on padded rows)
    r = t.to(torch.float64)[:, None, None]
    mp = measures_of(spectrum(p, r), r)
    ms = measures_of(factored_svdvals(q, k, r), r)
    ent, nent = entropies(p, row_len[:, :, None, :], n_rows=r)
    vals = torch.stack([mp[m] for m in MEASURES] + [ms[m] for m in MEASURES] + [ent, nent], -1)  # [B, L, H, 10]
    x = torch.stack([hidden[i] for i in range(L + 1)], 1).to(torch.float64) * real[:, None, :, None]
    rx = torch.minimum(t, torch.as_tensor(x.shape[-1], device=dev)).to(torch.float64)[:, None]
    hx = measures_of(gram_svdvals(x), rx)["erank"]  # [B, L + 1]
    causal = (torch.stack(masked, 1) & pair[:, :, 0]).triu(1).any(-1).any(-1).any(-1)  # [B]
    vals, hx, causal = vals.cpu().numpy(), hx.cpu().numpy(), causal.cpu().numpy()
    for j in range(len(lens)):
        yield vals[j], hx[j, :L], hx[j, 1:], bool(causal[j])


def run_pass(loaded: LoadedModel, ids: list[list[int]], *, batch_size: int, device: torch.device,
             progress: Callable[[int, int], None] | None = None) -> list[SequenceStats]:
    """Run the model on every sequence of ``ids`` and return their :class:`SequenceStats`
    (in the order of ``ids``). ``progress(done, total)`` is called after each batch."""
    model = loaded.model
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or getattr(model.config, "n_layer", 0) or 0)
    pad = getattr(model.config, "pad_token_id", None)
    pad = int(pad) if isinstance(pad, int) and pad >= 0 else 0
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out: list[SequenceStats | None] = [None] * len(ids)
    if progress is not None:
        progress(0, len(batches))
    for nb, batch in enumerate(batches):
        lens = [len(ids[i]) for i in batch]
        T = max(lens)
        input_ids = torch.full((len(batch), T), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), T), dtype=torch.long)
        for r, i in enumerate(batch):
            input_ids[r, :lens[r]] = torch.as_tensor(ids[i], dtype=torch.long)
            attn[r, :lens[r]] = 1
        with torch.no_grad(), capture_attention(model) as calls:
            res = model(input_ids=input_ids.to(device), attention_mask=attn.to(device), output_hidden_states=True)
        if n_layers and len(calls) != n_layers:
            raise InputError(
                f"{loaded.description}: captured {len(calls)} attention calls for {n_layers} layers; "
                "this architecture's attention does not go through transformers' attention interface."
            )
        if not calls:
            raise InputError(f"{loaded.description}: no attention call was captured; architecture not supported.")
        for r, (v, hx, hout, causal) in enumerate(_stats(list(calls), res.hidden_states, lens)):
            out[batch[r]] = SequenceStats(batch[r], lens[r], v, hx, hout, causal)
        if progress is not None:
            progress(nb + 1, len(batches))
    return [s for s in out if s is not None]
