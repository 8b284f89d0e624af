""":func:`attention`: from a model and token sequences to the tables of bounds.md §8."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from specbound.data.aggregate import N_RESAMPLES, aggregate
from specbound.data.forward import SEQUENCE_COLUMNS, SequenceStats, run_pass
from specbound.data.model import LoadedModel, default_model_path, load_model
from specbound.data.result import AttentionResult
from specbound.data.spectral import measures_of
from specbound.data.texts import (Sequences, TextSource, model_card_sentences, random_like, read_text_file,
                                  read_token_ids, tokenize)
from specbound.errors import InputError

__all__ = ["attention", "default_text"]

DEFAULT_MAX_LENGTH = 512


def default_text() -> tuple[list[str], TextSource]:
    """The sentences of the packaged MiniLM's model card (``README.md``), split at run time."""
    readme = default_model_path() / "README.md"
    if not readme.is_file():
        raise InputError("no text given and the packaged MiniLM's model card is missing: pass --text FILE.")
    lines = model_card_sentences(readme)
    return lines, TextSource("model_card", f"the model card (README.md) of the packaged all-MiniLM-L6-v2, "
                                           f"split into {len(lines)} sentences", len(lines))


def _check_int(name: str, value: Any, low: int, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}.")


def _sequences(loaded: LoadedModel, texts: Any, token_ids: Any, max_length: int) -> Sequences:
    if token_ids is not None:
        if texts is not None:
            raise InputError("pass texts or token_ids, not both.")
        ids, src = read_token_ids(token_ids)
        vocab = int(getattr(loaded.config, "vocab_size", 0) or 0)
        bad = [i for x in ids for i in x if vocab and i >= vocab]
        if bad:
            raise InputError(f"{src.description}: token id {bad[0]} is outside the vocabulary (size {vocab}).")
        truncated = sum(len(x) > max_length for x in ids)
        ids = [x[:max_length] for x in ids]
        specials = set(getattr(loaded.tokenizer, "all_special_ids", None) or [])
        return Sequences(ids, [[i in specials for i in x] for x in ids], src, truncated=truncated)
    if loaded.tokenizer is None:
        raise InputError(
            f"{loaded.description}: no tokenizer in the checkpoint folder; pass pre-tokenised ids "
            "(--token-ids FILE, a JSON list of lists / token_ids=) or a tokenizer (tokenizer=)."
        )
    if texts is None:
        lines, src = default_text()
    elif isinstance(texts, (str, os.PathLike)):
        lines, src = read_text_file(texts)
    else:
        lines = [str(s).strip() for s in texts]
        if not lines:
            raise InputError("texts is empty; give at least one non-empty string.")
        lines = [s for s in lines if s]
        if not lines:
            raise InputError("texts holds only blank strings; give at least one non-empty string.")
        src = TextSource("texts", f"{len(lines)} strings given in Python", len(lines))
    ids, special, truncated = tokenize(loaded.tokenizer, lines, max_length)
    return Sequences(ids, special, src, truncated=truncated)


def _weight_qk_k90(loaded: LoadedModel, n_layers: int, n_heads: int) -> tuple[np.ndarray, str | None]:
    """k90 of every weight QK[ℓ,h] (``[L, H]``), by specbound's weight pipeline (factored spectra)."""
    from specbound.spectra.blocks import blocks_of
    from specbound.spectra.compute import SpectraPolicy
    from specbound.weights.adapters import open_weights

    out = np.full((n_layers, n_heads), np.nan)
    try:
        weights = open_weights(loaded.model)
        policy = SpectraPolicy()
        for lw in weights.layers():
            res = blocks_of(lw)["qk"].compute(policy)
            for h, ms in enumerate(res.spectra):
                out[lw.index, h] = float(measures_of(ms.values.double(), ms.r)["k90"])
    except InputError as e:
        return out, f"weight QK k90 not available: {e}"
    return out, None


def _frames(stats: list[SequenceStats], source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sequences frame (per sequence, layer, head) and the per (sequence, layer) hidden ranks."""
    vals = np.stack([s.values for s in stats])  # [n, L, H, C]
    n, L, H, C = vals.shape
    seq = np.repeat(np.arange(n), L * H)
    layer = np.tile(np.repeat(np.arange(L), H), n)
    head = np.tile(np.arange(H), n * L)
    hid = np.stack([s.hidden for s in stats])  # [n, L]
    hout = np.stack([s.hidden_out for s in stats])
    toks = np.array([s.n_tokens for s in stats])
    f = pd.DataFrame({"source": source, "sequence": [stats[i].index for i in seq], "layer": layer, "head": head,
                      "n_tokens": toks[seq]})
    f = pd.concat([f, pd.DataFrame(vals.reshape(-1, C), columns=SEQUENCE_COLUMNS)], axis=1)
    f["hidden_erank"] = np.repeat(hid.reshape(-1), H)
    f["hidden_out_erank"] = np.repeat(hout.reshape(-1), H)
    lay = pd.DataFrame({"source": source, "sequence": np.repeat([s.index for s in stats], L),
                        "layer": np.tile(np.arange(L), n), "hidden_erank": hid.reshape(-1),
                        "hidden_out_erank": hout.reshape(-1)})
    return f, lay


def _versions() -> dict[str, str]:
    import scipy
    import transformers

    from specbound import __version__

    return {"specbound": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "scipy": scipy.__version__, "numpy": np.__version__,
            "pandas": pd.__version__}


def attention(
    model_or_path: Any = None,
    *,
    texts: Sequence[str] | str | os.PathLike | None = None,
    token_ids: Sequence[Sequence[int]] | str | os.PathLike | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    batch_size: int = 16,
    max_sequences: int | None = None,
    random_tokens: bool = False,
    device: str | torch.device | None = "cpu",
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    progress: Callable[[int, int], None] | None = None,
) -> AttentionResult:
    """Attention on real inputs (bounds.md §8): per head, the effective rank, stable rank, rank
    and k90 of the attention matrices ``P [t, t]`` and logit fields ``S = Q Kᵀ [t, t]``, the
    attention entropy, the hidden-state effective rank per layer and the weight QK's k90, each
    aggregated over sequences (mean, std, 95% bootstrap interval), and the capacity
    ``attention_effective_rank = Σ_{ℓ,h} mean_x erank(P[ℓ,h](x))``.

    ``model_or_path``: a checkpoint folder (config, weights, tokenizer if present), a
    ``transformers`` ``PreTrainedModel``, or ``None`` (the packaged all-MiniLM-L6-v2).
    ``texts``: a list of strings, or a text file (one sequence per non-empty line); ``None``:
    the packaged MiniLM's model card split into sentences. ``token_ids``: pre-tokenised
    sequences (a list of lists, or a JSON file of one) instead of texts. ``tokenizer``: overrides
    the checkpoint's. ``max_length``: longest sequence in tokens (longer ones are truncated,
    and said in ``notes``); default and ceiling the model's maximum. ``max_sequences``: use the
    first N sequences. ``random_tokens``: add the baseline of uniformly drawn token ids of the
    same lengths (``source = "random"``). ``seed`` seeds the random tokens and the bootstrap.
    ``progress(done, total)`` is called after each batch (text and baseline counted together).
    """
    from specbound.spectra.compute import resolve_device

    t0 = time.perf_counter()
    _check_int("batch_size", batch_size, 1, allow_none=False)
    _check_int("max_sequences", max_sequences, 1)
    _check_int("max_length", max_length, 1)
    _check_int("seed", seed, 0, allow_none=False)
    _check_int("n_resamples", n_resamples, 10, allow_none=False)
    dev = resolve_device(device)
    loaded = load_model(model_or_path, tokenizer=tokenizer, device=dev)
    cfg = loaded.config
    notes: list[str] = []
    limit = loaded.max_positions or DEFAULT_MAX_LENGTH
    if max_length is None:
        max_length = limit
    elif max_length > limit:
        notes.append(f"max_length {max_length} is above the model's maximum {limit}: sequences cut at {limit}")
        max_length = limit
    seqs = _sequences(loaded, texts, token_ids, max_length)
    if max_sequences is not None and len(seqs.ids) > max_sequences:
        seqs.dropped = len(seqs.ids) - max_sequences
        seqs.ids, seqs.special = seqs.ids[:max_sequences], seqs.special[:max_sequences]
        notes.append(f"max_sequences {max_sequences}: the first {max_sequences} sequences used, {seqs.dropped} left out")
    if seqs.truncated:
        notes.append(f"{seqs.truncated} sequence(s) longer than {max_length} tokens truncated to {max_length}")
    runs = [("text", seqs.ids)]
    random_info = None
    if random_tokens:
        vocab = int(getattr(cfg, "vocab_size", 0) or 0)
        tok = loaded.tokenizer
        if tok is not None:
            vocab = min(vocab, len(tok)) if vocab else len(tok)
        special_ids = list(getattr(tok, "all_special_ids", []) or []) if tok is not None else []
        runs.append(("random", random_like(seqs.ids, seqs.special, vocab, special_ids, seed)))
        random_info = {"vocab_size": vocab, "special_ids_excluded": len(set(special_ids)), "seed": seed,
                       "description": "token ids drawn uniformly from the vocabulary less its special tokens, "
                                      "same lengths; special-token positions ([CLS], [SEP], ...) kept"}
    n_batches = -(-len(seqs.ids) // batch_size)
    frames, lay_frames, causal = [], [], False
    was_training = loaded.model.training
    loaded.model.eval()  # no dropout; a user's module gets its mode back below
    try:
        for k, (name, ids) in enumerate(runs):
            def prog(done: int, total: int, _k: int = k) -> None:
                if progress is not None:
                    progress(_k * n_batches + done, n_batches * len(runs))

            stats = run_pass(loaded, ids, batch_size=batch_size, device=dev, progress=prog)
            causal = causal or any(s.causal for s in stats)
            f, lay = _frames(stats, name)
            frames.append(f)
            lay_frames.append(lay)
    finally:
        loaded.model.train(was_training)
    sequences = pd.concat(frames, ignore_index=True)
    per_layer = pd.concat(lay_frames, ignore_index=True)
    L, H = int(sequences["layer"].max()) + 1, int(sequences["head"].max()) + 1
    heads = aggregate(sequences, ["source", "layer", "head"], SEQUENCE_COLUMNS, seed=seed, n_resamples=n_resamples)
    qk_k90, why = _weight_qk_k90(loaded, L, H)
    if why:
        notes.append(why)
    heads["weight_qk_k90"] = qk_k90[heads["layer"].to_numpy(), heads["head"].to_numpy()]
    layers = aggregate(per_layer, ["source", "layer"], ["hidden_erank", "hidden_out_erank"], seed=seed,
                       n_resamples=n_resamples)
    over_heads = ["P_erank_mean", "S_erank_mean", "P_k90_mean", "S_k90_mean", "entropy_mean", "norm_entropy_mean",
                  "weight_qk_k90"]
    means = heads.groupby(["source", "layer"], sort=False)[over_heads].mean().reset_index()
    layers = layers.merge(means, on=["source", "layer"], how="left", validate="one_to_one")
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or H)
    info = {
        "model": {"source": loaded.description, "model_type": getattr(cfg, "model_type", None),
                  "class": type(loaded.model).__name__, "L": L, "H": H, "H_kv": n_kv,
                  "N": int(getattr(cfg, "hidden_size", 0) or 0), "max_positions": loaded.max_positions,
                  "attention": "causal" if causal else "bidirectional"},
        "options": {"max_length": max_length, "batch_size": batch_size, "max_sequences": max_sequences,
                    "random_tokens": random_tokens, "device": str(dev), "seed": seed, "n_resamples": n_resamples,
                    "confidence_level": 0.95, "bootstrap": "scipy.stats.bootstrap, BCa, mean over sequences"},
        "versions": _versions(),
        "text": {"source": seqs.source.to_dict(), "n_sequences": len(seqs.ids), "n_tokens": seqs.n_tokens,
                 "truncated": seqs.truncated, "dropped": seqs.dropped,
                 "tokenizer": type(loaded.tokenizer).__name__ if loaded.tokenizer is not None else None},
    }
    if random_info is not None:
        info["random"] = random_info
    return AttentionResult(heads=heads, layers=layers, sequences=sequences, info=info, notes=notes,
                           elapsed_s=time.perf_counter() - t0)
