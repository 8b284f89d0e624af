"""The E4 study: run every (sweep, seed) unit with a cache that survives a kill, then write
the tidy tables, the headline numbers, config.json and the plots.

Layout of ``out``::

    units/<sweep>_seed<k>.json   one finished unit (its key, rows, densities, seconds)
    kl.csv                       experiment, token_map, n, H, head_width, seed, samples, estimator,
                                 kl_to_limit, kl_to_gaussian, kl_limit_to_gaussian, floor, ...
    summary.csv                  per setting: mean, s.d. and standard error over seeds
    headline.json                slopes against n and H, resolved-above-floor flags
    densities.json               seed 0's densities (half line, y in units of sigma_inf)
    config.json                  config, seeds, sigma2_inf, versions, deviations, wall times
    kl_vs_n.png, kl_vs_H.png, densities.png

A unit is reused when its file holds the same key (:func:`.units.unit_key`); units are written
atomically, so a kill loses at most the unit being computed, and a rerun gives the same tables.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from specbound.errors import InputError
from specbound.experiments.common import (
    ProgressEvent,
    versions,
    write_json_atomic,
    write_text_atomic,
)
from specbound.experiments.infinite_width.config import (
    DEVIATIONS,
    QUICK_DEVIATIONS,
    InfiniteWidthConfig,
)
from specbound.experiments.infinite_width.samplers import sigma2_infinity, token_sigma
from specbound.experiments.infinite_width.summary import headline, summarise
from specbound.experiments.infinite_width.units import (
    COLUMNS,
    DENSITY_POINTS,
    compute_unit,
    unit_key,
)

__all__ = ["StudyResult", "load_unit", "run_study"]


@dataclass
class StudyResult:
    """What :func:`run_study` wrote, as objects."""

    kl: pd.DataFrame
    summary: pd.DataFrame
    headline: dict[str, Any]
    config: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        """Short: the units run and the headline slopes (not the dataclass dump)."""
        from specbound.report.experiments import short_repr

        return short_repr("infinite-width", self)

    def _repr_html_(self) -> str:
        """The notebook display: the headline and the KL table (``OUT/report.html`` has it all)."""
        from specbound.report.experiments import experiment_snippet

        return experiment_snippet("infinite-width", self)


def _unit_path(out: Path, experiment: str, k: int) -> Path:
    return out / "units" / f"{experiment}_seed{k}.json"


def load_unit(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The unit stored at ``path`` if it was computed for ``key``; else ``None`` (missing,
    unreadable, or another key)."""
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(blob, dict) or blob.get("key") != json.loads(json.dumps(key)):
        return None
    return blob


def run_study(cfg: InfiniteWidthConfig, out: str | Path, *,
              progress: Callable[[ProgressEvent], None] | None = None,
              plots: bool = True) -> StudyResult:
    """Run (or resume) the study of ``cfg`` into ``out`` and write every output file."""
    try:
        cfg.validate()
    except ValueError as e:
        raise InputError(f"E4 config: {e}.") from None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    emit = progress or (lambda ev: None)
    sigma2 = {tm: sigma2_infinity(token_sigma(tm, cfg.s)) for tm in {cfg.token_map(e) for e in cfg.experiments}}
    plan = [(e, k) for e in cfg.experiments for k in range(cfg.n_seeds)]
    emit(ProgressEvent("start", 0, len(plan), "E4 infinite width"))
    units: dict[tuple[str, int], dict[str, Any]] = {}
    reused = 0
    for done, (exp, k) in enumerate(plan, start=1):
        key = unit_key(cfg, exp, k)
        path = _unit_path(out, exp, k)
        blob = load_unit(path, key)
        cached = blob is not None
        if blob is None:
            emit(ProgressEvent("group", done - 1, len(plan), f"{exp} seed {k}"))
            res = compute_unit(cfg, exp, k, sigma2)
            blob = {"key": key, **res}
            write_json_atomic(path, blob)
        else:
            reused += 1
        units[(exp, k)] = blob
        emit(ProgressEvent("run", done, len(plan), f"{exp} seed {k}: {blob['seconds']:.1f} s"
                           + (" (cached)" if cached else ""), cached=cached,
                           info={"experiment": exp, "seed": k, "seconds": blob["seconds"]}))
    kl = pd.DataFrame([r for (e, k) in plan for r in units[(e, k)]["rows"]], columns=COLUMNS)
    summary = summarise(kl)
    head = headline(kl)
    files = _write_tables(out, kl, summary, head, units, cfg)
    seconds_by_exp = {e: float(sum(units[(e, k)]["seconds"] for k in range(cfg.n_seeds))) for e in cfg.experiments}
    config = {
        "experiment": "E4 infinite-width limit of one attention layer (Sakai, Karakida & Imaizumi 2025)",
        "config": cfg.to_dict(),
        "seeds": list(range(cfg.n_seeds)),
        "seed_streams": "run_rng(seed, sweep index, seed index, role[, setting]); see units.py",
        "sigma2_inf": sigma2,
        "versions": versions(),
        "deviations": DEVIATIONS + (QUICK_DEVIATIONS if cfg.quick else []),
        "units": len(plan),
        "units_reused_from_cache": reused,
        "compute_seconds_by_experiment": seconds_by_exp,
        "compute_seconds_total": float(sum(seconds_by_exp.values())),
    }
    if plots:
        from specbound.experiments.infinite_width.plots import write_plots

        files += write_plots(out, summary, _densities(units, cfg), sigma2, cfg.kl)
    config["wall_time_seconds"] = time.perf_counter() - t0
    write_json_atomic(out / "config.json", config)
    files.append(out / "config.json")
    emit(ProgressEvent("end", len(plan), len(plan), "done"))
    return StudyResult(kl=kl, summary=summary, headline=head, config=config, files=files)


def _densities(units: dict[tuple[str, int], dict[str, Any]], cfg: InfiniteWidthConfig) -> dict[str, Any]:
    return {e: units[(e, 0)]["densities"] for e in cfg.experiments if (e, 0) in units}


def _write_tables(out: Path, kl: pd.DataFrame, summary: pd.DataFrame, head: dict[str, Any],
                  units: dict[tuple[str, int], dict[str, Any]], cfg: InfiniteWidthConfig) -> list[Path]:
    files = [out / "kl.csv", out / "summary.csv", out / "headline.json", out / "densities.json"]
    write_text_atomic(files[0], kl.to_csv(index=False, float_format="%.10g"))
    write_text_atomic(files[1], summary.to_csv(index=False, float_format="%.10g"))
    write_json_atomic(files[2], head)
    write_json_atomic(files[3], {"y_over_sigma_inf": [float(x) for x in DENSITY_POINTS],
                                 "densities": _densities(units, cfg)})
    return files
