"""The offline family of E2: BERT-style encoders trained here on the synthetic language.

Every grid point (L, N) gets the same recipe (:class:`Recipe`): ``BertForMaskedLM`` from a
``BertConfig`` with ``num_hidden_layers = L``, ``hidden_size = N``, ``num_attention_heads =
N / head_dim`` (``head_dim = 32`` by default, so every width has at least one head and d_h is
the same across the grid; the published miniatures use d_h = 64), ``intermediate_size = 4N``,
GELU, post-LayerNorm, trained with masked-token prediction (BERT's 15 % / 80-10-10 masking)
by AdamW with linear warm-up and decay, for a fixed number of steps on a fixed training
corpus drawn from :class:`~specbound.experiments.synthetic_language.SyntheticLanguage`.

Checkpoints are written with ``save_pretrained`` (``config.json`` + ``model.safetensors``)
together with ``training.json`` (the recipe, seed, losses, held-out masked-token loss and the
unigram baseline and the SHA-256 of the files). Each checkpoint is written into a temporary
folder and moved into place with one rename; a later run with the same recipe and seed reuses it
only if the checksums match and it loads (:func:`verify_checkpoint`), else retrains.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specbound.experiments import hf_bert
from specbound.experiments.hf_bert import mask_tokens
from specbound.experiments.synthetic_language import (
    PAD,
    SyntheticLanguage,
    unigram_logprobs,
)
from specbound.writing import pid_alive

TRAINING_META = "training.json"
EVAL_CHUNK = 256  #: held-out sequences per forward pass


@dataclass(frozen=True)
class Recipe:
    """The training recipe shared by every grid point (sizes in tokens / sequences / steps)."""

    steps: int = 500
    batch_size: int = 32
    seq_len: int = 32
    n_train: int = 16000
    n_heldout: int = 2000
    lr: float = 1e-3
    warmup_frac: float = 0.1
    weight_decay: float = 0.01
    mask_prob: float = 0.15
    head_dim: int = 32
    ff_mult: int = 4
    dropout: float = 0.0
    language_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self, seed: int) -> str:
        """A short hash of the recipe and seed: a checkpoint is reused only if it matches."""
        blob = json.dumps({"recipe": self.to_dict(), "seed": seed}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: the default grid and recipe, and the ``--quick`` ones (documented in the CLI help).
DEFAULT_GRID: tuple[tuple[int, ...], tuple[int, ...]] = ((2, 4, 6, 8), (64, 128, 256))
QUICK_GRID: tuple[tuple[int, ...], tuple[int, ...]] = ((1, 2, 3), (32, 64))
DEFAULT_RECIPE = Recipe()
QUICK_RECIPE = Recipe(steps=300, batch_size=32, n_train=2000, n_heldout=400, lr=3e-3)


def bert_config(L: int, N: int, vocab_size: int, recipe: Recipe) -> Any:  # -> transformers.BertConfig
    """The ``BertConfig`` of grid point (L, N) under ``recipe`` (:func:`~specbound.experiments.hf_bert.bert_config`)."""
    return hf_bert.bert_config(vocab_size=vocab_size, hidden_size=N, num_layers=L, head_dim=recipe.head_dim,
                               ff_mult=recipe.ff_mult, max_positions=recipe.seq_len, pad_token_id=PAD,
                               dropout=recipe.dropout)


@dataclass
class Corpora:
    """The training and held-out corpora of one run (``[n, seq_len]`` int64)."""

    language: SyntheticLanguage
    train: np.ndarray
    heldout: np.ndarray


def make_corpora(recipe: Recipe, seed: int) -> Corpora:
    """Training corpus from sample seed ``seed``, held-out corpus from a disjoint seed stream."""
    lang = SyntheticLanguage(recipe.language_seed)
    train = lang.corpus(recipe.n_train, recipe.seq_len, seed=2 * seed)
    heldout = lang.corpus(recipe.n_heldout, recipe.seq_len, seed=2 * seed + 1)
    return Corpora(lang, train, heldout)


@torch.no_grad()
def evaluate_masked(
    model: torch.nn.Module, corpora: Corpora, recipe: Recipe, seed: int, device: str | torch.device = "cpu"
) -> dict[str, float]:
    """Held-out masked-token cross-entropy (nats) of ``model`` and of the unigram baseline.

    The masks are drawn with a fixed generator, so every model of a run is scored on the same
    masked positions; the unigram distribution is estimated on the training corpus.
    """
    g = torch.Generator().manual_seed(10_000 + seed)
    ids = torch.from_numpy(corpora.heldout)
    V = corpora.language.vocab_size
    inputs, labels = mask_tokens(ids, V, recipe.mask_prob, g)
    nll, correct, count = hf_bert.nll_and_correct(model, inputs, labels, EVAL_CHUNK, attention_mask=True,
                                                  device=device)
    uni = torch.from_numpy(unigram_logprobs(corpora.train, V))
    tot_uni = 0.0
    for i in range(0, len(ids), EVAL_CHUNK):  # the same chunks, so the same summation order
        y = labels[i : i + EVAL_CHUNK]
        tot_uni += float(-uni[y[y != -100]].sum())
    return {
        "heldout_masked_ce": nll / count,
        "unigram_masked_ce": tot_uni / count,
        "heldout_masked_acc": float(correct) / count,
        "heldout_masked_tokens": count,
    }


def train_one(
    L: int,
    N: int,
    out_dir: Path,
    corpora: Corpora,
    recipe: Recipe,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train grid point (L, N) into ``out_dir`` (or reuse a finished checkpoint there).

    Returns the ``training.json`` dictionary (``reused`` says whether training was skipped).
    ``progress(step, steps)`` is called during training. Uses the caller's torch thread setting.
    """
    from transformers import BertForMaskedLM

    out_dir = Path(out_dir)
    key = recipe.key(seed)
    meta = verify_checkpoint(out_dir, L, N, key)
    if meta is not None:
        meta["reused"] = True
        return meta

    t0 = time.time()
    V = corpora.language.vocab_size
    point_seed = seed * 1_000_003 + 1009 * L + N  # same recipe, own init per grid point
    torch.manual_seed(point_seed)
    model = BertForMaskedLM(bert_config(L, N, V, recipe)).to(device)
    g = torch.Generator().manual_seed(point_seed)  # batch indices, then masks, step by step
    batches = hf_bert.mlm_batches(torch.from_numpy(corpora.train), recipe.batch_size, V, recipe.mask_prob, g,
                                  attention_mask=True, device=device)
    losses = hf_bert.train_loop(model, batches, steps=recipe.steps, lr=recipe.lr, weight_decay=recipe.weight_decay,
                                warmup_frac=recipe.warmup_frac, where=f" for L={L}, N={N}", progress=progress)
    ev = evaluate_masked(model, corpora, recipe, seed, device)
    model = model.cpu()
    tail = losses[-max(1, len(losses) // 10) :]
    meta = {
        "L": L,
        "N": N,
        "H": N // recipe.head_dim,
        "key": key,
        "seed": seed,
        "recipe": recipe.to_dict(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "train_loss_last10pct": float(np.mean(tail)),
        "train_loss_first": losses[0] if losses else math.nan,
        "train_seconds": time.time() - t0,
        **ev,
    }
    meta = _write_checkpoint(model, out_dir, meta)
    meta["reused"] = False
    return meta


#: The files of a cached checkpoint, with their SHA-256 in ``training.json`` (``sha256``).
CHECKPOINT_FILES = ("config.json", "model.safetensors")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checkpoint(d: Path, L: int, N: int, key: str) -> dict[str, Any] | None:
    """The ``training.json`` of an intact finished checkpoint in ``d`` for (L, N) and recipe key
    ``key``, else ``None`` (the caller retrains).

    Intact means: ``training.json`` parses and matches (L, N, key); every file of
    :data:`CHECKPOINT_FILES` is a regular file whose SHA-256 equals the one stored when it was
    written; and the checkpoint loads (header, config, every layer's matrices finite). A
    truncated, edited or half-written checkpoint, or one from before checksums were stored, is
    not reused.
    """
    from specbound.errors import SpecboundError
    from specbound.weights.adapters import open_weights

    d = Path(d)
    try:
        meta = json.loads((d / TRAINING_META).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("L") != L or meta.get("N") != N:
        return None
    sums = meta.get("sha256")
    if not isinstance(sums, dict) or set(sums) != set(CHECKPOINT_FILES):
        return None
    for name in CHECKPOINT_FILES:
        f = d / name
        try:
            if not f.is_file() or f.is_symlink() or _sha256(f) != sums[name]:
                return None
        except OSError:
            return None
    try:
        weights = open_weights(d)
        if (weights.info.n_layers, weights.info.d_model) != (L, N):
            return None
        for _ in weights.layers():
            pass
    except SpecboundError:
        return None
    return meta


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def clean_stale(out_dir: Path) -> None:
    """Remove the temporary folders a killed run left beside ``out_dir``
    (``.{name}.tmp-{pid}``, ``.{name}.old-{pid}``) whose process is gone."""
    parent, name = Path(out_dir).parent, Path(out_dir).name
    if not parent.is_dir():
        return
    for p in parent.glob(f".{name}.*-*"):
        tag, _, pid = p.name[len(name) + 2:].partition("-")
        if tag in ("tmp", "old") and pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)


def _write_checkpoint(model: Any, out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the checkpoint and its ``training.json`` (with the files' SHA-256) into a temporary
    folder beside ``out_dir`` (weights first, ``training.json`` last, each fsynced), then move
    the folder into place with one rename: ``out_dir`` holds a complete checkpoint or none.
    An existing ``out_dir`` (a stale or corrupt checkpoint) is moved aside first and removed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    tmp.mkdir()
    try:
        hf_bert.save_quietly(model, tmp)
        for name in CHECKPOINT_FILES:
            _fsync_file(tmp / name)
        meta = {**meta, "sha256": {name: _sha256(tmp / name) for name in CHECKPOINT_FILES}}
        with (tmp / TRAINING_META).open("w") as fh:
            fh.write(json.dumps(meta, indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if out_dir.exists() or out_dir.is_symlink():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return meta


def checkpoint_dir(out: Path, L: int, N: int) -> Path:
    """Where grid point (L, N) of a synthetic run in ``out`` keeps its checkpoint."""
    return Path(out) / "checkpoints" / f"L{L}_N{N}"


def train_grid(
    out: Path,
    Ls: tuple[int, ...] | list[int],
    Ns: tuple[int, ...] | list[int],
    recipe: Recipe,
    seed: int,
    progress: Callable[[str, int, int], None] | None = None,
    device: str | torch.device = "cpu",
    on_point: Callable[[dict[str, Any], int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train (or reuse) every grid point, cheapest first; returns their ``training.json`` dicts.

    ``progress(message, done, total)`` reports finished grid points and, within a point,
    training steps (``message`` names the point). ``on_point(meta, done, total)`` is called
    when a point is finished (trained or reused: ``meta["reused"]``).
    """
    points = sorted(((L, N) for L in Ls for N in Ns), key=lambda p: (p[0] * p[1] ** 2, p))
    corpora: Corpora | None = None
    metas: list[dict[str, Any]] = []
    for i, (L, N) in enumerate(points):
        d = checkpoint_dir(out, L, N)
        if progress is not None:
            progress(f"train L={L} N={N}", i, len(points))
        if corpora is None and not _finished(d, L, N, recipe, seed):
            if progress is not None:
                progress("make the synthetic corpora", i, len(points))
            corpora = make_corpora(recipe, seed)
        step_cb = None
        if progress is not None:
            def step_cb(step: int, steps: int, _L: int = L, _N: int = N, _i: int = i) -> None:
                if step % 10 == 0 or step == steps:
                    progress(f"train L={_L} N={_N} step {step}/{steps}", _i, len(points))
        meta = train_one(L, N, d, corpora, recipe, seed, step_cb, device)  # type: ignore[arg-type]
        meta["path"] = str(d)
        metas.append(meta)
        if on_point is not None:
            on_point(meta, i + 1, len(points))
    if progress is not None:
        progress("trained", len(points), len(points))
    return metas


def _finished(d: Path, L: int, N: int, recipe: Recipe, seed: int) -> bool:
    return verify_checkpoint(d, L, N, recipe.key(seed)) is not None
