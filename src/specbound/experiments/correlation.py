"""Experiment E3: which complexity measure tracks the generalisation gap?
(``shared/spec/experiments.md`` §E3.)

A full-factorial sweep of small Transformers on a synthetic task with a known data
distribution. Every model is trained, its gap measured on fresh test data, and every bound
family of the catalogue evaluated on its weights (with the initial weights as the reference
for the families that measure distances to initialisation). Each measure is then scored as a
predictor of the gap like Jiang et al. (2020): Kendall's τ over all models, granulated τ per
hyper-parameter axis and their mean, and the sign-error rate over coupled pairs
(:mod:`specbound.experiments.correlation_scores`).

**Tasks.**

* ``sparse-majority``: ``x ∈ {0,1}^T`` uniform, a fixed support ``S`` of ``s`` positions,
  ``y = 1`` iff the majority of the bits in ``S`` are 1 (the E1 distribution, with a shorter
  T and smaller s so that the sweep's models span fitting and not fitting). Input: ``[CLS]``
  then the T bits; ``BertForSequenceClassification`` (pooler + linear classifier on ``[CLS]``).
  Label noise flips each label with probability ρ, independently.
  Metrics: accuracy and cross-entropy.
* ``masked-synthetic``: masked-token prediction on the seeded synthetic language of E2
  (:mod:`~specbound.experiments.synthetic_language`) with ``BertForMaskedLM`` (BERT's 15 % /
  80-10-10 masking). ``n_train`` counts training sequences. Label noise replaces each word of
  the corpora, once and for all, by a uniformly random word with probability ρ.
  Metrics: masked-token accuracy and cross-entropy on fixed masks (drawn once per corpus).

**The gap** of a model is ``train accuracy − test accuracy``: on its training set and on
``n_test`` fresh samples of the *same* distribution, label noise included (the population
risk that a bound controls is that of the distribution trained on; a model that learns the
clean rule and ignores the noise has a gap near 0, one that memorises the noise a large one).
``loss_gap = test loss − train loss`` is recorded and scored next to it, and ``test_acc_clean``
(accuracy on the noise-free test set) is recorded for reference.

**Models.** BERT encoders (post-LayerNorm, GELU, no dropout) of depth ``depth`` and width
``width`` with heads of width ``head_dim`` and ``d_ff = ff_mult · width``, trained by AdamW
(weight decay on matrices only, β = (0.9, 0.98)) with 10 % linear warm-up then linear decay
over ``steps`` mini-batches of ``batch_size`` drawn with replacement, gradient clipping at 1.

**Controlled comparisons.** Models that differ in one hyper-parameter share everything else:
the task instance (support / language) and the test set depend on the seed only; the training
set of size n is the first n samples of one pool (nested), with the same noise draws; the
initial weights depend on (seed, depth, width); the mini-batch index stream on the seed.

**Measures** (the ``log10_*`` columns of ``models.csv``): ``log10_<family>`` for every
family of the catalogue that :func:`specbound.analyze` evaluates; ``log10_<family>_per_sqrt_n``
= that value divided by ``sqrt(n_train)``, the sample factor that the proxies omit (bounds.md
§5) but every bound carries — without it a proxy cannot follow the ``n_train`` axis; and a
baseline that knows nothing of the weights, ``log10_inv_sqrt_n`` (``1/sqrt(n_train)``; the
catalogue's ``param_count`` is the other weight-free one).

**Reproducibility.** Every task trains with one torch thread, so a model's numbers do not
depend on where it runs: the in-process, process-pool and Ray paths write identical
``models.csv`` files for the same seed (tested). Finished models are cached in
``OUT/models/`` (trained weights and training record, keyed by a hash of everything that
determines them); a rerun — e.g. after an interrupted sweep — reuses them and trains only
what is missing. Measures are recomputed from the cached weights every time.

Library code: no printing; progress goes to an optional callback.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specbound.errors import InputError
from specbound.experiments.common import (
    ProgressCallback,
    ProgressEvent,
    load_keyed,
    run_rng,
    save_keyed,
    torch_threads,
    versions,
    write_json_atomic,
)

__all__ = [
    "AXES",
    "TASKS",
    "SweepConfig",
    "ModelSpec",
    "default_config",
    "quick_config",
    "load_grid",
    "expand_grid",
    "train_and_measure",
    "run_sweep",
    "score_table",
]

TASKS = ("sparse-majority", "masked-synthetic")

#: The hyper-parameter axes, in the order of ``models.csv``.
AXES = ("depth", "width", "n_train", "weight_decay", "lr", "label_noise", "steps")
_INT_AXES = {"depth", "width", "n_train", "steps"}

#: Value of an axis that a grid does not vary.
BASE_VALUES: dict[str, Any] = {"depth": 2, "width": 64, "n_train": 512, "weight_decay": 0.01,
                               "lr": 1e-3, "label_noise": 0.0, "steps": 600}

#: The default sweep: every axis at two values, full factorial (2^7 = 128 models).
DEFAULT_AXES: dict[str, tuple[Any, ...]] = {
    "depth": (1, 2),
    "width": (32, 64),
    "n_train": (128, 1024),
    "weight_decay": (0.0, 0.1),
    "lr": (1e-3, 3e-3),
    "label_noise": (0.0, 0.2),
    "steps": (200, 800),
}

#: ``--quick``: four axes at two values (16 models); width 32, shorter training, smaller test set.
QUICK_AXES: dict[str, tuple[Any, ...]] = {
    "depth": (1, 2),
    "n_train": (64, 512),
    "label_noise": (0.0, 0.25),
    "steps": (60, 240),
}

#: Task and training settings that are not swept (``settings`` in a grid file).
DEFAULT_SETTINGS: dict[str, Any] = {
    "seq_len": 32,         # sparse majority: T bits (+ [CLS]); masked-synthetic: tokens per sequence
    "support": 7,          # sparse majority: s, odd
    "head_dim": 16,
    "ff_mult": 4,
    "batch_size": 64,
    "n_test": 4000,        # fresh test samples (sequences for masked-synthetic)
    "warmup_frac": 0.1,
    "mask_prob": 0.15,     # masked-synthetic
    "language_seed": 0,    # masked-synthetic
}
QUICK_SETTINGS = {**DEFAULT_SETTINGS, "n_test": 1000}
QUICK_BASE = {**BASE_VALUES, "width": 32}

_CACHE_VERSION = 2


@dataclass(frozen=True)
class SweepConfig:
    """Everything that determines the sweep's numbers: task, axes (values per axis; axes not
    swept keep ``base``), fixed ``settings`` and the seed."""

    task: str = "sparse-majority"
    axes: tuple[tuple[str, tuple[Any, ...]], ...] = tuple(DEFAULT_AXES.items())
    base: tuple[tuple[str, Any], ...] = tuple(BASE_VALUES.items())
    settings: tuple[tuple[str, Any], ...] = tuple(DEFAULT_SETTINGS.items())
    seed: int = 0
    quick: bool = False
    grid_file: str | None = None

    @property
    def axes_dict(self) -> dict[str, tuple[Any, ...]]:
        return dict(self.axes)

    @property
    def settings_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    @property
    def swept_axes(self) -> list[str]:
        """Axes with at least two values (the ones scores are granulated over)."""
        return [a for a, v in self.axes if len(v) > 1]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "axes": {a: list(v) for a, v in self.axes}, "base": dict(self.base),
                "settings": self.settings_dict, "seed": self.seed, "quick": self.quick,
                "grid_file": self.grid_file}

    def validate(self) -> None:
        """Raise :class:`~specbound.errors.InputError` naming the offending field."""
        where = f"grid file {self.grid_file}: " if self.grid_file else ""
        if self.task not in TASKS:
            raise InputError(f"{where}unknown task {self.task!r}; choose one of {', '.join(TASKS)}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"--seed must be a non-negative integer, got {self.seed!r}.")
        s = self.settings_dict
        for k in ("seq_len", "support", "head_dim", "ff_mult", "batch_size", "n_test"):
            if isinstance(s[k], bool) or not isinstance(s[k], int) or s[k] < 1:
                raise InputError(f"{where}settings.{k} must be a positive integer, got {s[k]!r}.")
        if s["support"] % 2 == 0 or s["support"] > s["seq_len"]:
            raise InputError(f"{where}settings.support must be odd and at most seq_len = {s['seq_len']}, "
                             f"got {s['support']}.")
        if not 0 <= s["warmup_frac"] < 1:
            raise InputError(f"{where}settings.warmup_frac must be in [0, 1), got {s['warmup_frac']!r}.")
        if not 0 < s["mask_prob"] < 1:
            raise InputError(f"{where}settings.mask_prob must be in (0, 1), got {s['mask_prob']!r}.")
        for axis, values in self.axes:
            if not values:
                raise InputError(f"{where}axis {axis!r} has no values.")
            if len(set(values)) != len(values):
                raise InputError(f"{where}axis {axis!r} repeats a value: {list(values)}.")
            for v in values:
                _check_value(axis, v, s, where)
        for axis, v in self.base:
            _check_value(axis, v, s, where)
        if not self.swept_axes:
            raise InputError(f"{where}no axis has two or more values: a sweep needs models that differ "
                             "to score measures against their gaps.")


def _check_value(axis: str, v: Any, s: Mapping[str, Any], where: str) -> None:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    if ok and axis in _INT_AXES:
        ok = isinstance(v, int) and v >= 1
    elif ok and axis == "lr":
        ok = v > 0
    elif ok and axis == "weight_decay":
        ok = v >= 0
    elif ok and axis == "label_noise":
        ok = 0 <= v < 0.5
    if not ok:
        rule = {"lr": "a positive number", "weight_decay": "a number >= 0",
                "label_noise": "a number in [0, 0.5)"}.get(axis, "a positive integer")
        raise InputError(f"{where}axis {axis!r}: value {v!r} is not {rule}.")
    if axis == "width" and v % s["head_dim"]:
        raise InputError(f"{where}axis 'width': {v} is not a multiple of settings.head_dim = {s['head_dim']}.")


def default_config(task: str = "sparse-majority", seed: int = 0) -> SweepConfig:
    """The default sweep (:data:`DEFAULT_AXES`, 128 models)."""
    return SweepConfig(task=task, seed=seed)


def quick_config(task: str = "sparse-majority", seed: int = 0) -> SweepConfig:
    """The ``--quick`` preset (:data:`QUICK_AXES`, 16 small models)."""
    return SweepConfig(task=task, axes=tuple(QUICK_AXES.items()), base=tuple(QUICK_BASE.items()),
                       settings=tuple(QUICK_SETTINGS.items()), seed=seed, quick=True)


def load_grid(path: str | Path, task: str | None = None, seed: int = 0, quick: bool = False) -> SweepConfig:
    """A sweep from a YAML or JSON file::

        task: masked-synthetic          # optional; --task overrides it
        axes:                           # the swept axes and their values (full factorial)
          depth: [1, 2, 3]
          lr: [0.001, 0.003]
        base:                           # optional: values of the axes not swept
          width: 32
        settings:                       # optional: task / training constants
          n_test: 2000

    Axes not listed under ``axes`` keep their ``base`` value (:data:`BASE_VALUES`, or the
    quick preset's with ``quick``). Unknown keys, axes or settings are errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--grid {path}: no such file.")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise InputError(f"--grid {path}: reading YAML needs PyYAML (pip install pyyaml); "
                                 "or give the grid as JSON.") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"--grid {path}: cannot parse ({type(e).__name__}: {str(e).splitlines()[0]}).") from None
    if not isinstance(data, dict):
        raise InputError(f"--grid {path}: expected a mapping with 'axes' (and optionally 'task', 'base', 'settings').")
    unknown = set(data) - {"task", "axes", "base", "settings"}
    if unknown:
        raise InputError(f"--grid {path}: unknown key(s) {sorted(unknown)}; allowed: task, axes, base, settings.")
    axes = data.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise InputError(f"--grid {path}: 'axes' must map axis names to lists of values; axes: {', '.join(AXES)}.")
    for name, section, allowed in (("axes", axes, AXES), ("base", data.get("base") or {}, AXES),
                                   ("settings", data.get("settings") or {}, DEFAULT_SETTINGS)):
        if not isinstance(section, dict):
            raise InputError(f"--grid {path}: '{name}' must be a mapping.")
        bad = set(section) - set(allowed)
        if bad:
            raise InputError(f"--grid {path}: unknown {name} entr{'y' if len(bad) == 1 else 'ies'} "
                             f"{sorted(bad)}; allowed: {', '.join(allowed)}.")
    for a, v in axes.items():
        if not isinstance(v, list):
            raise InputError(f"--grid {path}: axis {a!r} must be a list of values, got {v!r}.")
    base = {**(QUICK_BASE if quick else BASE_VALUES), **(data.get("base") or {})}
    settings = {**(QUICK_SETTINGS if quick else DEFAULT_SETTINGS), **(data.get("settings") or {})}
    cfg = SweepConfig(task=task or data.get("task") or "sparse-majority",
                      axes=tuple((a, tuple(axes[a])) for a in AXES if a in axes),
                      base=tuple(base.items()), settings=tuple(settings.items()), seed=seed,
                      quick=quick, grid_file=str(path))
    cfg.validate()
    return cfg


# =========================================================================== the models


@dataclass(frozen=True)
class ModelSpec:
    """One model of the sweep: a value for every axis."""

    hp: tuple[tuple[str, Any], ...]

    @property
    def hp_dict(self) -> dict[str, Any]:
        return dict(self.hp)

    @property
    def model_id(self) -> str:
        h = self.hp_dict
        return (f"L{h['depth']}-N{h['width']}-n{h['n_train']}-wd{h['weight_decay']:g}-lr{h['lr']:g}"
                f"-noise{h['label_noise']:g}-steps{h['steps']}")


def expand_grid(cfg: SweepConfig) -> list[ModelSpec]:
    """The full factorial of the swept axes (other axes at their base value), in a fixed order."""
    axes = cfg.axes_dict
    base = dict(cfg.base)
    values = [axes.get(a, (base[a],)) for a in AXES]
    return [ModelSpec(tuple(zip(AXES, combo))) for combo in itertools.product(*values)]


def model_key(cfg: SweepConfig, spec: ModelSpec) -> dict[str, Any]:
    """Everything that determines one model's trained weights (its cache key)."""
    return {"task": cfg.task, "settings": cfg.settings_dict, "seed": cfg.seed, "hp": spec.hp_dict,
            "pool": _pool_size(cfg), "version": _CACHE_VERSION}


def _pool_size(cfg: SweepConfig) -> int:
    """Training-pool size: the largest n_train of the sweep (smaller sets are its prefixes)."""
    return max(cfg.axes_dict.get("n_train", (dict(cfg.base)["n_train"],)))


# --------------------------------------------------------------------------- data

_SM_CLS, _SM_PAD = 2, 3  # sparse majority token ids: bits 0 and 1, [CLS], an unused [PAD]


@dataclass
class TaskData:
    """Training pool (nested prefixes) and test set of one noise level, both drawn from the
    noisy distribution (the one the gap refers to), plus the clean test set."""

    train_x: np.ndarray
    train_y: np.ndarray   # sparse majority: labels [n]; masked: unused
    test_x: np.ndarray
    test_y: np.ndarray
    vocab_size: int
    clean_test_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clean_test_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extra: dict[str, Any] = field(default_factory=dict)


def make_task_data(cfg: SweepConfig, pool: int, label_noise: float) -> TaskData:
    """The data of every model with noise level ``label_noise`` (streams depend on the seed only)."""
    s = cfg.settings_dict
    if cfg.task == "sparse-majority":
        T = s["seq_len"]
        support = np.sort(run_rng(cfg.seed, 3, 0).choice(T, size=s["support"], replace=False))
        # uniform doubles are drawn one after the other, so a smaller pool is a prefix of a larger one
        bits_tr = (run_rng(cfg.seed, 3, 3).random((pool, T)) < 0.5).astype(np.int64)
        bits_te = (run_rng(cfg.seed, 3, 4).random((s["n_test"], T)) < 0.5).astype(np.int64)
        flip_tr = run_rng(cfg.seed, 3, 1).random(pool)
        flip_te = run_rng(cfg.seed, 3, 2).random(s["n_test"])

        def ids(bits: np.ndarray) -> np.ndarray:
            return np.concatenate([np.full((len(bits), 1), _SM_CLS, dtype=np.int64), bits], axis=1)

        y_tr = (bits_tr[:, support].sum(1) * 2 > s["support"]).astype(np.int64)
        y_te = (bits_te[:, support].sum(1) * 2 > s["support"]).astype(np.int64)
        return TaskData(ids(bits_tr), np.where(flip_tr < label_noise, 1 - y_tr, y_tr),
                        ids(bits_te), np.where(flip_te < label_noise, 1 - y_te, y_te), vocab_size=4,
                        clean_test_x=ids(bits_te), clean_test_y=y_te, extra={"support": support.tolist()})
    from specbound.experiments.synthetic_language import SPECIAL_TOKENS, SyntheticLanguage

    lang = SyntheticLanguage(s["language_seed"])
    train = lang.corpus(pool, s["seq_len"], seed=1000 + 2 * cfg.seed)
    test = lang.corpus(s["n_test"], s["seq_len"], seed=1001 + 2 * cfg.seed)

    def corrupt(ids: np.ndarray, stream: int) -> np.ndarray:
        u = run_rng(cfg.seed, 4, stream, 0).random(ids.shape)  # row-major draws: nested prefixes
        n_words = lang.vocab_size - len(SPECIAL_TOKENS)
        words = len(SPECIAL_TOKENS) + np.minimum((run_rng(cfg.seed, 4, stream, 1).random(ids.shape) * n_words)
                                                 .astype(np.int64), n_words - 1)
        return np.where((u < label_noise) & (ids >= len(SPECIAL_TOKENS)), words, ids)

    return TaskData(corrupt(train, 0), np.zeros(0), corrupt(test, 1), np.zeros(0), vocab_size=lang.vocab_size,
                    clean_test_x=test)


def _bert_config(cfg: SweepConfig, hp: Mapping[str, Any], vocab_size: int) -> Any:
    from transformers import BertConfig

    s = cfg.settings_dict
    sm = cfg.task == "sparse-majority"
    from specbound.experiments.synthetic_language import PAD

    return BertConfig(
        vocab_size=vocab_size, hidden_size=hp["width"], num_hidden_layers=hp["depth"],
        num_attention_heads=hp["width"] // s["head_dim"], intermediate_size=s["ff_mult"] * hp["width"],
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=s["seq_len"] + (1 if sm else 0), type_vocab_size=1,
        pad_token_id=_SM_PAD if sm else PAD, num_labels=2,
    )


def _new_model(cfg: SweepConfig, hp: Mapping[str, Any], vocab_size: int) -> Any:
    """The initial model: its weights depend on (seed, depth, width) only."""
    import torch
    from transformers import BertForMaskedLM, BertForSequenceClassification

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cls = BertForSequenceClassification if cfg.task == "sparse-majority" else BertForMaskedLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(run_rng(cfg.seed, 5, hp["depth"], hp["width"]).integers(2**62)))
        model = cls(_bert_config(cfg, hp, vocab_size))
    return model


def _train(model: Any, cfg: SweepConfig, hp: Mapping[str, Any], data: TaskData) -> list[float]:
    import torch

    s = cfg.settings_dict
    n, steps = hp["n_train"], hp["steps"]
    x_all = torch.from_numpy(data.train_x[:n])
    y_all = torch.from_numpy(data.train_y[:n]) if cfg.task == "sparse-majority" else None
    from specbound.experiments.scaling_synthetic import mask_tokens
    from specbound.experiments.training import adamw_warmup_linear, optimizer_step

    opt, sched = adamw_warmup_linear(model, hp["lr"], hp["weight_decay"], steps, s["warmup_frac"])
    gen = torch.Generator().manual_seed(int(run_rng(cfg.seed, 6).integers(2**62)))
    losses = []
    model.train()
    for step in range(steps):
        idx = torch.randint(0, n, (s["batch_size"],), generator=gen)
        if y_all is not None:
            out = model(input_ids=x_all[idx], labels=y_all[idx])
        else:
            x, y = mask_tokens(x_all[idx], data.vocab_size, s["mask_prob"], gen)
            out = model(input_ids=x, labels=y)
        losses.append(optimizer_step(out.loss, model, opt, sched, f"at step {step}"))
    model.eval()
    return losses


def _evaluate(model: Any, cfg: SweepConfig, x: np.ndarray, y: np.ndarray, vocab_size: int,
              mask_seed: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on ``x`` (labels ``y``; masked task: fixed masks)."""
    import torch

    from specbound.experiments.scaling_synthetic import mask_tokens

    s = cfg.settings_dict
    xt = torch.from_numpy(x)
    if cfg.task == "masked-synthetic":
        gen = torch.Generator().manual_seed(mask_seed)
        xt, yt = mask_tokens(xt, vocab_size, s["mask_prob"], gen)
    else:
        yt = torch.from_numpy(y)
    loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for a in range(0, len(xt), 500):
            logits = model(input_ids=xt[a:a + 500]).logits
            yy = yt[a:a + 500]
            if cfg.task == "masked-synthetic":
                m = yy != -100
                logits, yy = logits[m], yy[m]
            lp = torch.log_softmax(logits.double(), -1)
            loss += float(-lp.gather(1, yy[:, None]).sum())
            correct += int((lp.argmax(-1) == yy).sum())
            count += len(yy)
    if count == 0:
        raise ValueError(f"no token of the {len(x)} evaluation sequences was masked; raise settings.n_test "
                         "(or n_train) so that accuracy and loss are defined")
    return correct / count, loss / count


def train_and_measure(cfg_dict: dict[str, Any], hp: dict[str, Any], state: dict[str, Any] | None = None,
                      ) -> dict[str, Any]:
    """One task of the sweep (runs in a worker process or a Ray task; importable by name).

    Builds the model of ``hp``, trains it unless its trained ``state`` (a state dict) is given,
    measures train/test metrics and every measure. One torch thread throughout, so the numbers
    do not depend on where the task runs. Returns ``{"row": models.csv row, "state": trained
    state dict or None, "train_seconds": float, "analysis_seconds": float, "not_evaluated":
    [{"bound": name, "reason": ...}]}`` (families without a value for this model).
    """
    import torch

    cfg = _config_from_dict(cfg_dict)
    spec = ModelSpec(tuple((a, hp[a]) for a in AXES))
    t0 = time.perf_counter()
    with torch_threads(1):
        data = make_task_data(cfg, _pool_size(cfg), hp["label_noise"])
        init = _new_model(cfg, hp, data.vocab_size)
        model = _new_model(cfg, hp, data.vocab_size)
        trained_state = None
        last_loss = None
        if state is None:
            losses = _train(model, cfg, hp, data)
            last_loss = float(np.mean(losses[-max(1, len(losses) // 10):]))
            trained_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            model.load_state_dict(state["weights"])
            last_loss = state.get("train_loss_last10pct")
            model.eval()
        t1 = time.perf_counter()
        n = hp["n_train"]
        tr_acc, tr_loss = _evaluate(model, cfg, data.train_x[:n], data.train_y[:n], data.vocab_size, 11)
        te_acc, te_loss = _evaluate(model, cfg, data.test_x, data.test_y, data.vocab_size, 12)
        row: dict[str, Any] = {"model_id": spec.model_id, "task": cfg.task, "seed": cfg.seed, **spec.hp_dict,
                               "n_params": sum(p.numel() for p in model.parameters()),
                               "train_loss_last10pct": last_loss,
                               "train_acc": tr_acc, "test_acc": te_acc, "train_loss": tr_loss,
                               "test_loss": te_loss, "gap": tr_acc - te_acc, "loss_gap": te_loss - tr_loss}
        row["test_acc_clean"] = te_acc if hp["label_noise"] == 0 else _evaluate(
            model, cfg, data.clean_test_x, data.clean_test_y, data.vocab_size, 12)[0]
        measures, not_evaluated = _measures(model, init, cfg, hp)
        row.update(measures)
    t2 = time.perf_counter()
    out_state = None
    if trained_state is not None:
        out_state = {"weights": trained_state, "train_loss_last10pct": last_loss}
    return {"row": row, "state": out_state, "train_seconds": t1 - t0 if state is None else 0.0,
            "analysis_seconds": t2 - t1, "not_evaluated": not_evaluated}


def _measures(model: Any, init: Any, cfg: SweepConfig, hp: Mapping[str, Any]
              ) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``log10_*`` measure columns (see the module docstring) and the families not evaluated
    (the analysis's ``bounds_not_evaluated`` plus any without a finite log10 value)."""
    from specbound.analysis import analyze

    s = cfg.settings_dict
    T = s["seq_len"] + (1 if cfg.task == "sparse-majority" else 0)
    report = analyze(model, init=init, seq_len=T)
    half_log_n = 0.5 * math.log10(hp["n_train"])
    out: dict[str, Any] = {}
    not_evaluated = [dict(d) for d in report.not_evaluated]  # {"bound", "reason"}
    for name, b in sorted(report.bounds.items()):
        v = b.log10_value
        if v is None or not math.isfinite(v):
            not_evaluated.append({"bound": name, "reason": f"log10 value {v!r} is not finite"})
            continue
        out[f"log10_{name}"] = float(v)
        out[f"log10_{name}_per_sqrt_n"] = float(v) - half_log_n
    out["log10_inv_sqrt_n"] = -half_log_n
    return out, not_evaluated


def _config_from_dict(d: Mapping[str, Any]) -> SweepConfig:
    return SweepConfig(task=d["task"], axes=tuple((a, tuple(v)) for a, v in d["axes"].items()),
                       base=tuple(d["base"].items()), settings=tuple(d["settings"].items()),
                       seed=d["seed"], quick=d["quick"], grid_file=d.get("grid_file"))


# =========================================================================== the sweep


def _cache_path(out: Path, spec: ModelSpec) -> Path:
    return out / "models" / f"{spec.model_id}.pt"


def _load_cached(out: Path, cfg: SweepConfig, spec: ModelSpec) -> dict[str, Any] | None:
    blob = load_keyed(_cache_path(out, spec), model_key(cfg, spec))
    return None if blob is None else blob.get("state")


def _save_cached(out: Path, cfg: SweepConfig, spec: ModelSpec, state: dict[str, Any]) -> None:
    save_keyed(_cache_path(out, spec), model_key(cfg, spec), {"state": state})


#: The gaps every measure is scored against (``target`` column of ``scores.csv``).
TARGETS = ("gap", "loss_gap")


def score_table(models: Any, axes: Sequence[str], targets: Sequence[str] = TARGETS) -> Any:
    """``scores.csv``: per target gap and ``log10_*`` measure of ``models``, the three scores of
    :mod:`~specbound.experiments.correlation_scores`; within a target the measures are ranked
    by granulated τ mean, then τ (a measure without a granulated τ comes last)."""
    import pandas as pd

    from specbound.experiments.correlation_scores import score_measure

    hparams = models[list(axes)].to_dict("records") if axes else [{} for _ in range(len(models))]
    tables = []
    for target in targets:
        rows = []
        for col in (c for c in models.columns if c.startswith("log10_")):
            sc = score_measure(col[len("log10_"):], models[col].tolist(), models[target].tolist(), hparams, axes)
            rows.append({"target": target, **sc.to_row(axes)})
        table = pd.DataFrame(rows)
        if len(table):
            table = table.sort_values(["granulated_tau_mean", "kendall_tau"], ascending=False,
                                      na_position="last", kind="mergesort").reset_index(drop=True)
            table.insert(1, "rank", range(1, len(table) + 1))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def run_sweep(cfg: SweepConfig, out: str | Path, *, jobs: int = 1, ray_address: str | None = None,
              progress: ProgressCallback | None = None, plots: bool = True) -> dict[str, Any]:
    """Run (or resume) the sweep and write ``models.csv``, ``scores.csv``, ``config.json`` and
    the plots to ``out``. ``jobs``: local worker processes (1 = in this process); ``ray_address``:
    run every model as a Ray task instead (``"local"`` starts a local instance).

    Returns ``{"models": DataFrame, "scores": DataFrame, "config": dict, "files": [...],
    "failed": [(model_id, error)]}``. A model whose training fails (e.g. diverges) is listed in
    ``failed`` and in ``config.json``; the others are scored."""
    import pandas as pd

    from specbound.parallel import map_tasks

    cfg.validate()
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise InputError("experiment correlation trains Hugging Face BERT models and needs transformers: "
                         "pip install 'specbound[hf]'.") from None
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"--jobs must be a positive integer, got {jobs!r}.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder; choose another.")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    specs = expand_grid(cfg)
    total = len(specs)
    emit = progress or (lambda ev: None)
    emit(ProgressEvent(kind="start", total=total, message=f"{total} models ({cfg.task})"))
    cfg_dict = cfg.to_dict()
    cached = {sp: _load_cached(out, cfg, sp) for sp in specs}
    n_cached = sum(v is not None for v in cached.values())
    args = [(cfg_dict, sp.hp_dict, cached[sp]) for sp in specs]
    rows: dict[int, dict[str, Any]] = {}
    timings: dict[str, dict[str, float]] = {}
    failed: list[tuple[str, str]] = []
    not_evaluated: dict[str, list[dict[str, str]]] = {}
    for i, res, exc in map_tasks(train_and_measure, args, jobs=jobs, ray_address=ray_address):
        spec = specs[i]
        if exc is not None:
            failed.append((spec.model_id, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
            emit(ProgressEvent(kind="run", done=len(rows) + len(failed), total=total,
                               message=f"{spec.model_id}: failed ({failed[-1][1]})"))
            continue
        if res["state"] is not None:
            _save_cached(out, cfg, spec, res["state"])
        rows[i] = res["row"]
        timings[spec.model_id] = {"train_seconds": res["train_seconds"], "analysis_seconds": res["analysis_seconds"]}
        if res["not_evaluated"]:
            not_evaluated[spec.model_id] = res["not_evaluated"]
        r = res["row"]
        emit(ProgressEvent(kind="run", done=len(rows) + len(failed), total=total, cached=res["state"] is None,
                           message=(f"{spec.model_id}{' [cached]' if res['state'] is None else ''}: "
                                    f"train_acc={r['train_acc']:.3f} test_acc={r['test_acc']:.3f} gap={r['gap']:+.3f}"),
                           info=r))
    if not rows:
        raise InputError(f"every model of the sweep failed; first error: {failed[0][0]}: {failed[0][1]}")
    models = pd.DataFrame([rows[i] for i in sorted(rows)])
    axes = [a for a in cfg.swept_axes]
    scores = score_table(models, axes)
    from specbound.experiments.common import write_text_atomic

    write_text_atomic(out / "models.csv", models.to_csv(index=False))
    write_text_atomic(out / "scores.csv", scores.to_csv(index=False))
    files = [str(out / "models.csv"), str(out / "scores.csv")]
    if plots:
        from specbound.experiments.correlation_plots import make_plots

        files += [str(p) for p in make_plots(models, scores, out)]
    wall = time.perf_counter() - t_start
    meta = {
        "experiment": "E3 correlation of measures with the generalisation gap (shared/spec/experiments.md)",
        "config": cfg_dict,
        "seed": cfg.seed,
        "versions": versions(),
        "execution": {"jobs": None, "ray_address": ray_address} if ray_address else {"jobs": jobs, "ray_address": None},
        "wall_time_seconds": wall,
        "models_total": total,
        "models_reused_from_cache": n_cached,
        "models_failed": [{"model_id": m, "error": e} for m, e in failed],
        "gap": "train accuracy - test accuracy on fresh data of the same (noisy) distribution; "
               "loss_gap = test loss - train loss",
        "granulated_over": axes,
        "measures": [c for c in models.columns if c.startswith("log10_")],
        "measures_not_evaluated": not_evaluated,
        "timings_seconds": timings,
        "files": [Path(f).name for f in files] + ["config.json"],
    }
    write_json_atomic(out / "config.json", meta)
    files.append(str(out / "config.json"))
    emit(ProgressEvent(kind="end", done=len(rows), total=total,
                       message=f"{len(rows)} models ({n_cached} reused, {len(failed)} failed) in {wall:.1f} s"))
    return {"models": models, "scores": scores, "config": meta, "files": files, "failed": failed}

