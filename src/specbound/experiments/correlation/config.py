"""E3 configuration: the axes and settings, :class:`SweepConfig` (validated), the presets,
grid files (YAML/JSON), the full-factorial expansion into :class:`ModelSpec` and the cache key."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specbound.errors import InputError


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
    if not (path.exists() or path.is_symlink()):
        raise InputError(f"--grid {path}: no such file.")
    from specbound.weights.files import read_text

    text = read_text(path, "--grid file")  # regular files only: a FIFO never blocks
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


def _config_from_dict(d: Mapping[str, Any]) -> SweepConfig:
    return SweepConfig(task=d["task"], axes=tuple((a, tuple(v)) for a, v in d["axes"].items()),
                       base=tuple(d["base"].items()), settings=tuple(d["settings"].items()),
                       seed=d["seed"], quick=d["quick"], grid_file=d.get("grid_file"))
