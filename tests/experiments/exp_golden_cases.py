"""The tiny experiment configurations whose numeric outputs are kept as golden files, and the
normalisation / comparison of those outputs (plain Python: no specbound import).

The golden files under ``tests/experiments/golden/`` were written by
``tests/experiments/golden/make_golden.py`` from the code before the issue-20 redesign
(commit 280ce88); ``test_golden.py`` reruns the same configurations with today's code and
compares every number to 1e-12 relative and every string exactly.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).parent / "golden"
RTOL = 1e-12

#: E1: two lengths x two seeds, a few dozen full-batch epochs, bounds included.
E1_CONFIG: dict[str, Any] = dict(lengths=(10, 12), n_seeds=2, n_train=8, n_val=32, n_test=64,
                                 max_epochs=25, lr=0.02, lr_min=0.02)

#: E2: the synthetic family on a 2 x 2 miniature grid with a few training steps.
E2_GRID: tuple[tuple[int, ...], tuple[int, ...]] = ((1, 2), (32, 64))
E2_RECIPE: dict[str, Any] = dict(steps=4, batch_size=8, n_train=64, n_heldout=32, lr=3e-3)
E2_SEED = 1

#: E3: a 2 x 2 sparse-majority grid and a 2-model masked-synthetic grid.
E3_GRIDS: dict[str, dict[str, Any]] = {
    "e3_sm": {"axes": {"n_train": [16, 64], "steps": [2, 4]}, "base": {"width": 32, "depth": 1},
              "settings": {"n_test": 64}},
    "e3_masked": {"task": "masked-synthetic", "axes": {"steps": [3, 6]},
                  "base": {"width": 32, "depth": 1, "n_train": 16}, "settings": {"n_test": 16, "seq_len": 16}},
}

#: Per output file: CSV columns that are wall times or bookkeeping of a particular run.
VOLATILE_COLUMNS = {"train_seconds", "reused"}
#: config.json keys that are timings, versions, dates or absolute paths.
VOLATILE_KEYS = {"versions", "wall_time_seconds", "started_utc", "finished_utc", "timings_seconds",
                 "torch_threads", "out", "path", "grid_file", "cache_dir"}


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _csv_rows(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    head = rows[0]
    keep = [i for i, c in enumerate(head) if c not in VOLATILE_COLUMNS]
    return [[r[i] for i in keep] for r in rows]


def normalise(out: Path, csv_files: list[str]) -> dict[str, Any]:
    """The deterministic outputs of one experiment run in ``out``: every CSV (minus
    :data:`VOLATILE_COLUMNS`, cells as strings) and config.json (minus :data:`VOLATILE_KEYS`)."""
    res: dict[str, Any] = {name: _csv_rows((out / name).read_text()) for name in csv_files}
    res["config.json"] = _strip(json.loads((out / "config.json").read_text()))
    return res


def _as_float(s: Any) -> float | None:
    if isinstance(s, bool) or s is None:
        return None
    if isinstance(s, (int, float)):
        return float(s)
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


#: Interval ends: ``slope ∓ q·se`` where an end is near 0 carries the quantile's relative
#: error (the hand-written t quantile of the old code was good to ~3e-13) times ``q·se/|end|``;
#: they are compared relative to the interval's half-width instead of their own size.
INTERVAL_ENDS = ("ci_low", "ci_high")


def _compare_table(golden: list[list[str]], new: list[list[str]], where: str) -> list[str]:
    if len(golden) != len(new) or not golden or golden[0] != new[0]:
        return compare(golden[:1], new[:1], f"{where}[header]") or [f"{where}: {len(golden)} != {len(new)} rows"]
    head = golden[0]
    ends = [head.index(c) for c in INTERVAL_ENDS if c in head]
    diffs: list[str] = []
    for i, (ga, na) in enumerate(zip(golden[1:], new[1:]), start=1):
        if len(ga) != len(na):
            diffs.append(f"{where}[{i}]: {len(ga)} != {len(na)} cells")
            continue
        half = 0.0
        if len(ends) == 2 and all(_as_float(ga[j]) is not None and ga[j].strip() for j in ends):
            half = abs(float(ga[ends[1]]) - float(ga[ends[0]])) / 2
        for j, (a, b) in enumerate(zip(ga, na)):
            fa, fb = _as_float(a), _as_float(b)
            if j in ends and half > 0 and fa is not None and fb is not None and a.strip() and b.strip():
                if abs(fa - fb) > RTOL * max(abs(fa), abs(fb), half):
                    diffs.append(f"{where}[{i}][{head[j]}]: {a!r} != {b!r} (half-width {half:.3g})")
                continue
            diffs += compare(a, b, f"{where}[{i}][{head[j]}]")
    return diffs


def compare(golden: Any, new: Any, where: str = "") -> list[str]:
    """Differences between two normalised outputs: numbers (also numbers written as CSV text)
    must agree to :data:`RTOL` relative (NaN equals NaN; interval ends see
    :data:`INTERVAL_ENDS`), everything else exactly."""
    if isinstance(golden, dict) and isinstance(new, dict):
        diffs = [f"{where}: keys {sorted(set(golden) ^ set(new))} differ"] if set(golden) != set(new) else []
        for k in golden.keys() & new.keys():
            if k.endswith(".csv"):
                diffs += _compare_table(golden[k], new[k], f"{where}/{k}")
            else:
                diffs += compare(golden[k], new[k], f"{where}/{k}")
        return diffs
    if isinstance(golden, list) and isinstance(new, list):
        if len(golden) != len(new):
            return [f"{where}: length {len(golden)} != {len(new)}"]
        out: list[str] = []
        for i, (a, b) in enumerate(zip(golden, new)):
            out += compare(a, b, f"{where}[{i}]")
        return out
    fa, fb = _as_float(golden), _as_float(new)
    if fa is not None and fb is not None and not (isinstance(golden, str) and golden.strip() == ""):
        if math.isnan(fa) and math.isnan(fb):
            return []
        if fa == fb or abs(fa - fb) <= RTOL * max(abs(fa), abs(fb)):
            return []
        return [f"{where}: {golden!r} != {new!r} (rel {abs(fa - fb) / max(abs(fa), abs(fb)):.2e})"]
    return [] if golden == new else [f"{where}: {golden!r} != {new!r}"]


def load(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text())


def save(name: str, data: dict[str, Any]) -> None:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    (GOLDEN_DIR / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
