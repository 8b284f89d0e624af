"""E1 study: every (T, seed) run trained (or reused from the run cache), measured, written to
``runs.csv`` / ``trends.csv`` / ``config.json``, with the slope of every quantity against log2 T."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specbound.experiments.common import (
    ExperimentResult,
    ProgressCallback,
    ProgressEvent,
    load_keyed,
    save_keyed,
    versions,
    write_csv_atomic,
    write_json_atomic,
)
from specbound.experiments.sparse_majority.config import (
    FIT_CHANGES,
    LITERAL_SETTINGS,
    PROTOCOL_DEVIATIONS,
    QUICK_DEVIATIONS,
    SparseMajorityConfig,
)
from specbound.experiments.sparse_majority.data import SparseMajorityData
from specbound.experiments.sparse_majority.norms import (
    analyze_available,
    bound_columns,
    to_transformer_weights,
    weight_norms,
)
from specbound.experiments.sparse_majority.train import (
    RunResult,
    RunSpec,
    evaluate,
    run_data,
    train_runs,
)
from specbound.experiments.stats import fit_slope


def _cache_path(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / f"T{spec.T:04d}_s{spec.seed_index:03d}.pt"


def _load_cached(out: Path, cfg: SparseMajorityConfig, spec: RunSpec) -> dict[str, Any] | None:
    return load_keyed(_cache_path(out, spec), cfg.run_key(spec.T, spec.seed_index))


def _save_cached(out: Path, cfg: SparseMajorityConfig, res: RunResult, row: dict[str, Any]) -> None:
    save_keyed(_cache_path(out, res.spec), cfg.run_key(res.spec.T, res.spec.seed_index),
               {"params": res.params, "row": json.dumps(row)})


def _train_row(cfg: SparseMajorityConfig, res: RunResult, data: SparseMajorityData) -> dict[str, Any]:
    tr_acc, tr_loss = evaluate(res.params, data, "train", cfg)
    va_acc, va_loss = evaluate(res.params, data, "val", cfg)
    te_acc, te_loss = evaluate(res.params, data, "test", cfg)
    return {
        "T": res.spec.T, "seed": res.spec.seed_index, "epochs": res.epochs,
        "best_epoch": res.best_epoch, "reached_train_acc": res.reached_train_acc,
        "stopped_at_cap": res.stopped_at_cap,
        "train_acc": tr_acc, "val_acc": va_acc, "test_acc": te_acc,
        "train_loss": tr_loss, "val_loss": va_loss, "test_loss": te_loss,
        "acc_gap": tr_acc - te_acc, "loss_gap": te_loss - tr_loss,
        "train_seconds": res.train_seconds,
    }


def run_study(cfg: SparseMajorityConfig, out: str | Path, progress: ProgressCallback | None = None,
              plots: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole study and write ``runs.csv``, ``trends.csv``,
    ``config.json`` and plots to ``out``. Finished runs are cached in ``out/runs/`` (selected
    weights + training metrics) and reused when their configuration matches; norms and bounds
    are recomputed from the cached weights every time. The runs of one length are trained
    together and cached when they finish, so an interruption loses at most the length in
    progress.

    Returns ``{"runs": DataFrame, "trends": DataFrame, "config": dict, "files": [...]}``.
    """
    import pandas as pd

    cfg.validate_study()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    specs = [RunSpec(T, s) for T in cfg.lengths for s in range(cfg.n_seeds)]
    total = len(specs)
    emit = progress or (lambda ev: None)
    emit(ProgressEvent(kind="start", total=total, message=f"{total} runs"))
    have_bounds = analyze_available()
    rows: dict[RunSpec, dict[str, Any]] = {}
    n_done = 0
    n_cached = 0

    def finish(spec: RunSpec, params: dict[str, torch.Tensor], row: dict[str, Any], cached: bool) -> None:
        nonlocal n_done
        src = f"sparse_majority T={spec.T} seed={spec.seed_index}"
        full = dict(row)
        full.update(weight_norms(params, cfg))
        full.update(bound_columns(params, cfg, spec.T, src))
        rows[spec] = full
        n_done += 1
        emit(ProgressEvent(kind="run", done=n_done, total=total, cached=cached,
                           message=_run_line(full, cached), info=full))

    for T in cfg.lengths:
        todo: list[RunSpec] = []
        for spec in (sp for sp in specs if sp.T == T):
            blob = _load_cached(out, cfg, spec)
            if blob is None:
                todo.append(spec)
            else:
                n_cached += 1
                finish(spec, blob["params"], json.loads(blob["row"]), cached=True)
        if not todo:
            continue
        data = [run_data(cfg, sp) for sp in todo]
        by_spec = dict(zip(todo, data, strict=True))
        for res in train_runs(cfg, todo, data, progress=progress):
            row = _train_row(cfg, res, by_spec[res.spec])
            _save_cached(out, cfg, res, row)
            finish(res.spec, res.params, row, cached=False)

    runs = pd.DataFrame([rows[sp] for sp in specs])
    trends = compute_trends(runs)
    write_csv_atomic(out / "runs.csv", runs)
    write_csv_atomic(out / "trends.csv", trends)
    files = [str(out / "runs.csv"), str(out / "trends.csv")]
    if plots:
        from specbound.experiments.sparse_majority.plots import make_plots

        files += [str(p) for p in make_plots(runs, out)]
    wall = time.perf_counter() - t_start
    meta = {
        "experiment": "E1 sparse majority (shared/spec/experiments.md)",
        "config": asdict(cfg),
        "protocol": protocol_record(cfg),
        "seed": cfg.seed,
        "versions": versions(),
        "wall_time_seconds": wall,
        "runs_total": total,
        "runs_reused_from_cache": n_cached,
        "runs_stopped_at_cap": int(runs["stopped_at_cap"].sum()),
        "bounds_available": have_bounds,
        "bound_columns": [c for c in runs.columns if c.startswith("log10_")],
        "sequence_length_family": "edelman_seq_len (the library's B_E * sqrt(ln T), bounds.md section 5), "
                                  "evaluated at T + 1 tokens (T bits and [CLS])",
        "l1_quantities": {
            "l1_sum_all_variables": "Trauger & Tewari's tracked quantity: sum of the entrywise l1 norms of "
                                    "every trainable variable (6 kernels and 6 biases)",
            "l1_sum_weights_only": "sum over the 6 kernels alone (not their quantity)",
        },
        "runs_stopped_at_cap_per_T": capped_per_T(runs),
        "trends": "slope against log2 T per quantity, twice: runs = all (every run) and runs = fitted "
                  "(runs that reached 100% training accuracy, i.e. not stopped at the epoch cap)",
        "deviations": PROTOCOL_DEVIATIONS,
        "quick_deviations": QUICK_DEVIATIONS if cfg.quick else [],
        "trend_x": "log2(T): slopes are per doubling of T",
        "model_mapping_notes": [n.to_dict() for n in _mapping_notes(cfg)],
        "files": [Path(f).name for f in files] + ["config.json"],
    }
    if not have_bounds:
        meta["bounds_missing_reason"] = ("specbound.analyze is not available in this installation; "
                                         "bound columns (log10_<name>) are left out")
    write_json_atomic(out / "config.json", meta)
    files.append(str(out / "config.json"))
    emit(ProgressEvent(kind="end", done=n_done, total=total,
                       message=f"{total} runs ({n_cached} reused) in {wall:.1f} s"))
    return SparseMajorityResult(runs=runs, trends=trends, config=meta, files=files)


class SparseMajorityResult(ExperimentResult):
    """What :func:`run_study` returns: the dict ``{"runs", "trends", "config", "files"}`` (used
    as a dict), with a short ``repr`` and a notebook display (runs by T, the slopes)."""

    command = "sparse-majority"


def protocol_record(cfg: SparseMajorityConfig) -> dict[str, Any]:
    """config.json's ``"protocol"``: the protocol's name, every training setting of ``cfg``
    (the fields a protocol sets, as run) and what differs from the literal protocol."""
    settings = {k: getattr(cfg, k) for k in LITERAL_SETTINGS if k != "protocol"}
    differs = {k: v for k, v in settings.items() if v != LITERAL_SETTINGS[k]}
    return {"name": cfg.protocol, "settings": settings, "differs_from_literal": differs,
            "changes_from_literal": FIT_CHANGES if cfg.protocol == "fit" else []}


def _mapping_notes(cfg: SparseMajorityConfig) -> list[Any]:
    zero = {k: torch.zeros(s) for k, s in _shapes(cfg).items()}
    return to_transformer_weights(zero, cfg).info.notes


def _shapes(cfg: SparseMajorityConfig) -> dict[str, tuple[int, ...]]:
    d, hk = cfg.d_model, cfg.n_heads * cfg.key_dim
    return {"W_q": (d, hk), "b_q": (hk,), "W_k": (d, hk), "b_k": (hk,), "W_v": (d, hk), "b_v": (hk,),
            "W_o": (hk, d), "b_o": (d,), "W_in": (d, cfg.d_hidden), "b_in": (cfg.d_hidden,),
            "W_out": (cfg.d_hidden, cfg.n_classes), "b_out": (cfg.n_classes,)}


def _run_line(row: dict[str, Any], cached: bool) -> str:
    bounds = " ".join(f"{k[6:]}=10^{row[k]:.2f}" for k in row if k.startswith("log10_"))
    cap = " (cap)" if row["stopped_at_cap"] else ""
    return (f"T={row['T']} seed={row['seed']}{' [cached]' if cached else ''}: "
            f"epochs={row['epochs']}{cap} train_acc={row['train_acc']:.3f} "
            f"test_acc={row['test_acc']:.3f} gap={row['acc_gap']:+.3f} "
            f"l1_sum_all_variables={row['l1_sum_all_variables']:.1f} {bounds}").rstrip()


#: Columns that identify a run or describe its bookkeeping rather than a measured quantity.
_NOT_TRENDED = {"T", "seed", "stopped_at_cap", "train_seconds"}


def capped_per_T(runs: Any) -> dict[str, int]:
    """``{"T": number of runs stopped at the epoch cap}`` for every T of ``runs``."""
    g = runs.groupby("T")["stopped_at_cap"].apply(lambda c: int(c.astype(bool).sum()))
    return {str(int(T)): int(v) for T, v in g.items()}


def _capped_text(runs: Any) -> str:
    n = runs.groupby("T").size()
    return " ".join(f"T={T}:{c}/{int(n.loc[int(T)])}" for T, c in capped_per_T(runs).items())


def compute_trends(runs: Any, level: float = 0.95) -> Any:
    """Per numeric quantity of ``runs``, twice: OLS slope against log2(T) over all runs
    (``runs = "all"``) and over the fitted runs only (``runs = "fitted"``: not stopped at the
    epoch cap), seeds as replicates, with a ``level`` t-interval
    (:func:`~specbound.experiments.stats.fit_slope`: empty slope/intercept with fewer than 2
    finite values or a single T, empty interval with fewer than 3). Columns: quantity, runs,
    n, n_capped (capped runs among all), capped_per_T (``T=16:0/4 T=32:1/4 …``),
    slope_per_doubling, ci_low, ci_high, ci_contains_zero, intercept, mean, std."""
    import pandas as pd

    capped = runs["stopped_at_cap"].astype(bool).to_numpy()
    n_capped = int(capped.sum())
    text = _capped_text(runs)
    x_all = np.log2(runs["T"].to_numpy(dtype=float))
    recs = []
    for col in runs.columns:
        if col in _NOT_TRENDED or not pd.api.types.is_numeric_dtype(runs[col]):
            continue
        y_all = runs[col].to_numpy(dtype=float)
        for which, keep in (("all", np.ones_like(capped)), ("fitted", ~capped)):
            x, y = x_all[keep], y_all[keep]
            fit = fit_slope(x, y, level)
            fin = np.isfinite(y)
            recs.append({"quantity": col, "runs": which, "n": fit.n, "n_capped": n_capped, "capped_per_T": text,
                         "slope_per_doubling": fit.slope, "ci_low": fit.ci_low, "ci_high": fit.ci_high,
                         "ci_contains_zero": fit.contains_zero, "intercept": fit.intercept,
                         "mean": float(np.nanmean(y)) if fin.any() else float("nan"),
                         "std": float(np.nanstd(y)) if fin.any() else float("nan")})
    return pd.DataFrame(recs)
