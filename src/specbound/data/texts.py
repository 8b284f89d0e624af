"""Where token sequences come from: a text file (one sequence per non-empty line), a list of
strings, pre-tokenised ids (a JSON list of lists), or the default text, the model card
(``README.md``) shipped inside the packaged MiniLM, split into sentences at run time; and the
random-token baseline of the same lengths (bounds.md §8).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specbound.errors import InputError
from specbound.weights.files import read_text

#: The largest text file read (256 MiB; the data pass tokenises every line of it).
MAX_TEXT_BYTES = 256 * 2**20

__all__ = ["Sequences", "TextSource", "model_card_sentences", "random_like", "read_text_file",
           "read_token_ids", "tokenize"]


@dataclass
class TextSource:
    """What the sequences were made of: ``kind`` (``file``, ``texts``, ``token_ids``,
    ``model_card``), a human-readable ``description`` and the number of ``lines`` read."""

    kind: str
    description: str
    lines: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": self.description, "lines": self.lines}


@dataclass
class Sequences:
    """Token sequences ready for the forward pass.

    ``ids``: one list of token ids per sequence (special tokens included, truncated).
    ``special``: per sequence, a mask of the positions holding special tokens (``[CLS]``,
    ``[SEP]`` …; all False without a tokenizer). ``truncated``: how many sequences were cut at
    ``max_length``; ``dropped``: how many were left out by ``max_sequences``.
    """

    ids: list[list[int]]
    special: list[list[bool]]
    source: TextSource
    truncated: int = 0
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def _lines(text: str, where: str) -> list[str]:
    if not text:
        raise InputError(f"{where}: the text is empty; give one sequence per line.")
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError(f"{where}: only blank lines; give one sequence per non-empty line.")
    return lines


def read_text_file(path: str | os.PathLike) -> tuple[list[str], TextSource]:
    """The non-empty lines of a UTF-8 text file (stripped); one-line errors for a missing,
    unreadable, empty or all-blank file."""
    p = Path(path).expanduser()
    if not (p.exists() or p.is_symlink()) or str(path) == "":
        raise InputError(f"{p}: no such text file (for literal text pass a list of strings: texts=[...]).")
    text = read_text(p, "text file", limit=MAX_TEXT_BYTES)  # regular files only: a FIFO never blocks
    if not text:
        raise InputError(f"{p}: the file is empty; give one sequence per line.")
    lines = _lines(text, str(p))
    return lines, TextSource("file", f"{p} ({len(lines)} non-empty lines)", len(lines))


def read_token_ids(obj: Any) -> tuple[list[list[int]], TextSource]:
    """Pre-tokenised sequences: a path to a JSON file holding a list of lists of non-negative
    integers, or such a list itself."""
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj).expanduser()
        text = read_text(p, "token-id file")  # regular files only: a FIFO never blocks
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise InputError(f"{p}: not valid JSON ({e}); expected a list of lists of token ids.") from None
        where, kind = str(p), "token_ids"
    else:
        data, where, kind = obj, "token_ids", "token_ids"
    if not isinstance(data, list) or not all(isinstance(x, (list, tuple)) for x in data):
        raise InputError(f"{where}: expected a list of lists of token ids, e.g. [[101, 2023, 102], ...].")
    seqs = [list(x) for x in data if len(x) > 0]
    if not seqs:
        raise InputError(f"{where}: no non-empty sequence of token ids.")
    for x in seqs:
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in x):
            raise InputError(f"{where}: token ids must be non-negative integers.")
    return seqs, TextSource(kind, f"{where} ({len(seqs)} pre-tokenised sequences)", len(seqs))


_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def model_card_sentences(readme: str | os.PathLike) -> list[str]:
    """The prose of a model card split into sentences: YAML front matter, code blocks, tables,
    headings and rules left out; links reduced to their text, markup removed; paragraphs
    split at ``.``/``!``/``?`` followed by a capital; sentences of fewer than four words dropped."""
    text = Path(readme).read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        lines = lines[end + 1:]
    paragraphs: list[list[str]] = [[]]
    fence = False
    for ln in lines:
        s = ln.strip()
        if s.startswith("```"):
            fence = not fence
            paragraphs.append([])
            continue
        if fence or not s or s.startswith(("#", "|", "<", "---", "***", "===")):
            paragraphs.append([])
            continue
        paragraphs[-1].append(s)
    out: list[str] = []
    for para in paragraphs:
        if not para:
            continue
        prose = _LINK.sub(r"\1", " ".join(para))
        prose = re.sub(r"[*_`]+", "", prose)
        prose = re.sub(r"\s+", " ", prose).strip()
        out += [s for s in _SENTENCE_END.split(prose) if len(s.split()) >= 4]
    return out


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[list[bool]], int]:
    """Tokenise one text at a time as the tokenizer does by default (special tokens added),
    truncated at ``max_length``. Returns ``(ids, special_masks, n_truncated)``."""
    ids, special, truncated = [], [], 0
    for text in texts:
        enc = tokenizer(text, add_special_tokens=True, truncation=False, return_special_tokens_mask=True,
                        verbose=False)
        x, m = list(enc["input_ids"]), [bool(v) for v in enc["special_tokens_mask"]]
        if len(x) > max_length:
            truncated += 1
            enc = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length,
                            return_special_tokens_mask=True)
            x, m = list(enc["input_ids"]), [bool(v) for v in enc["special_tokens_mask"]]
        if x:
            ids.append(x)
            special.append(m)
    return ids, special, truncated


def random_like(ids: Sequence[Sequence[int]], special: Sequence[Sequence[bool]], vocab_size: int,
                special_ids: Sequence[int], seed: int) -> list[list[int]]:
    """The random-token baseline: sequences of the same lengths whose ordinary positions hold
    token ids drawn uniformly (``numpy.random.default_rng(seed)``) from the vocabulary's
    ``vocab_size`` ids less the special ones; positions holding special tokens keep them."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(vocab_size), np.asarray(sorted(set(special_ids)), dtype=np.int64))
    if pool.size == 0:
        raise InputError("the vocabulary has no ordinary token to draw random tokens from.")
    out = []
    for x, m in zip(ids, special):
        draw = pool[rng.integers(0, pool.size, size=len(x))]
        out.append([int(t) if sp else int(r) for t, r, sp in zip(x, draw, m)])
    return out
