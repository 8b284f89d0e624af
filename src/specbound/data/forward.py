"""The forward pass over batches and the per-sequence quantities of bounds.md §8.

Sequences are sorted by length, cut into batches of ``batch_size`` and padded on the right
(attention mask 0 on the padding), so every real token keeps the positions 0..t−1 it has
alone. For each sequence of t real tokens, layer ℓ and query head h:

* ``P[ℓ,h]`` = the model's attention probabilities restricted to the t real tokens
  (``probs[b, h, :t, :t]``; the padding keys are masked, so each row still sums to 1);
* ``S[ℓ,h] = Q Kᵀ`` (t × t) from the model's own query and key of head h (K of KV group
  ``h // (H / H_kv)``), singular values by the factored route (:func:`factored_svdvals`);
* each sequence's matrices are its real ``t × t`` blocks (the batch's sequences of one length are
  measured together), spectra by :func:`spectrum` (P) and :func:`factored_svdvals` (S): a
  symmetric eigenproblem per matrix with an exact-SVD fallback, as accurate as a dense SVD per
  head for every measure (bounds.md §8; see those functions);
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
from specbound.data.spectral import (entropies_of_rows, factored_svdvals, gram_svdvals, measures_of, row_entropies,
                                     spectrum)
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


def _hidden_keys(c: Captured, a: int, b: int, T: int, t: int) -> torch.Tensor | None:
    """``True`` where the model's mask hides key j from query i, rows ``a:b`` of the batch, real
    tokens only (``[b − a, t, t]``), or ``None`` when the call had no mask."""
    if c.mask is None:
        return None
    m = c.mask[a:b, 0] if c.mask.shape[1] == 1 else c.mask[a:b].amax(1)
    return _masked(m[:, -T:, -T:][:, :t, :t])


def _stats(calls: list[Captured], hidden: tuple[torch.Tensor, ...], lens: list[int]) -> Iterator[tuple]:
    """Per-sequence quantities of one right-padded batch (true lengths ``lens``, ascending, as
    :func:`run_pass` sorts them). The sequences of one length form a contiguous run of rows; each
    run is measured in one go on its real ``t × t`` blocks (``probs[a:b, :, :t, :t]``, ``Q, K[a:b,
    :, :t]``): no padding enters any matrix, and no matrix is larger than its sequence. Each
    layer's spectra of a run are one batched call over its sequences and heads (per layer, not
    all layers at once: the float64 temporaries stay small enough to be reused by the allocator
    instead of being mapped afresh, page by page); the measures of all of them are one call."""
    L = len(calls)
    dev = calls[0].probs.device
    B, H, T = calls[0].probs.shape[0], calls[0].probs.shape[1], calls[0].probs.shape[-1]
    n_kv = calls[0].key.shape[1]
    g = None if n_kv == H else _group_of(H, n_kv, dev)
    f64 = torch.float64
    vals = torch.empty(B, L, H, len(SEQUENCE_COLUMNS), dtype=f64, device=dev)
    hx = torch.empty(B, L + 1, dtype=f64, device=dev)
    causal = torch.zeros(B, dtype=torch.bool, device=dev)
    a = 0
    while a < B:
        t = lens[a]
        b = a
        while b < B and lens[b] == t:
            b += 1
        if any(lens[i] < t for i in range(b, B)):
            raise ValueError("_stats needs the batch sorted by length")
        n = b - a
        spectra = torch.zeros(n, L, 2, H, t, dtype=f64, device=dev)  # P, S (S's unlisted values: zeros)
        h = torch.empty(n, L, H, t, dtype=f64, device=dev)
        row_len = torch.full((n, L, 1, t), t, dtype=torch.long, device=dev)
        masks: dict[int, torch.Tensor] = {}
        for layer, c in enumerate(calls):
            p = c.probs[a:b, :, :t, :t].to(f64)  # [n, H, t, t]
            spectra[:, layer, 0] = spectrum(p)
            h[:, layer] = row_entropies(p)
            del p
            k = c.key[a:b, :, :t]
            q, k = (x.to(f64, memory_format=torch.contiguous_format) for x in (c.query[a:b, :, :t],
                                                                               k if g is None else k[:, g]))
            s = factored_svdvals(q, k)
            spectra[:, layer, 1, :, :s.shape[-1]] = s
            if c.mask is not None:  # layers usually share one mask tensor: read it once
                if id(c.mask) not in masks:
                    hid = _hidden_keys(c, a, b, T, t)
                    masks[id(c.mask)] = t - hid.sum(-1)
                    causal[a:b] |= hid.triu(1).flatten(1).any(-1)
                row_len[:, layer, 0] = masks[id(c.mask)]
        m = measures_of(spectra, t)  # [n, L, 2, H] each
        out = vals[a:b]
        for j, name in enumerate(MEASURES):
            out[..., j] = m[name][:, :, 0]
            out[..., len(MEASURES) + j] = m[name][:, :, 1]
        out[..., -2], out[..., -1] = entropies_of_rows(h, row_len)
        hs = torch.stack([gram_svdvals(hidden[layer][a:b, :t]) for layer in range(L + 1)], 1)  # [n, L + 1, min(t, N)]
        hx[a:b] = measures_of(hs, min(t, hs.shape[-1]))["erank"]
        a = b
    vals_np, hx_np, causal_np = vals.cpu().numpy(), hx.cpu().numpy(), causal.cpu().numpy()
    for j in range(B):
        yield vals_np[j], hx_np[j, :L], hx_np[j, 1:], bool(causal_np[j])


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
