"""The E3 sweep: every model of the grid trained and measured (in this process, a process
pool or Ray), finished models cached in ``OUT/models/``, the tables, plots and config written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from specbound.errors import InputError
from specbound.experiments.common import (
    ExperimentResult,
    ProgressCallback,
    ProgressEvent,
    load_keyed,
    save_keyed,
    versions,
    write_json_atomic,
    write_text_atomic,
)
from specbound.experiments.correlation.config import (
    ModelSpec,
    SweepConfig,
    expand_grid,
    model_key,
)
from specbound.experiments.correlation.measure import (
    sample_size_adjustment,
    train_and_measure,
)
from specbound.experiments.correlation.scores import MIN_ESS, score_table


def _cache_path(out: Path, spec: ModelSpec) -> Path:
    return out / "models" / f"{spec.model_id}.pt"


def _load_cached(out: Path, cfg: SweepConfig, spec: ModelSpec) -> dict[str, Any] | None:
    blob = load_keyed(_cache_path(out, spec), model_key(cfg, spec))
    return None if blob is None else blob.get("state")


def _save_cached(out: Path, cfg: SweepConfig, spec: ModelSpec, state: dict[str, Any]) -> None:
    save_keyed(_cache_path(out, spec), model_key(cfg, spec), {"state": state})


#: The gaps every measure is scored against (``target`` column of ``scores.csv``).


class SweepResult(ExperimentResult):
    """What :func:`run_sweep` returns: the dict ``{"models", "scores", "config", "files",
    "failed"}`` (used as a dict), with a short ``repr`` (the sweep, the three best-ranked
    measures, failures, wall time) and a notebook display (the ranking table)."""

    command = "correlation"


def run_sweep(cfg: SweepConfig, out: str | Path, *, jobs: int = 1, ray_address: str | None = None,
              progress: ProgressCallback | None = None, plots: bool = True) -> SweepResult:
    """Run (or resume) the sweep and write ``models.csv``, ``scores.csv``, ``config.json`` and
    the plots to ``out``. ``jobs``: local worker processes (1 = in this process); ``ray_address``:
    run every model as a Ray task instead (``"local"`` starts a local instance).

    Returns a :class:`SweepResult`, the dict ``{"models": DataFrame, "scores": DataFrame,
    "config": dict, "files": [...], "failed": [(model_id, error)]}``. A model whose training fails (e.g. diverges) is listed in
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
    n_test = int(cfg.settings_dict["n_test"])
    scores = score_table(models, axes, n_test=n_test)
    write_text_atomic(out / "models.csv", models.to_csv(index=False))
    write_text_atomic(out / "scores.csv", scores.to_csv(index=False))
    files = [str(out / "models.csv"), str(out / "scores.csv")]
    if plots:
        from specbound.experiments.correlation.plots import make_plots

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
        "scores": {
            "kendall_tau": "tau-a (Jiang et al. 2020, eq. 2); kendall_tau_b: tau-b beside it",
            "granulated_tau": "Jiang et al. 2020 eqs. 3-4: mean of tau-a over every group of models differing in one "
                              "axis (a group with constant gaps contributes 0; n_constant_groups_<axis>)",
            "robust_sign_error": "Dziugaite et al. 2020 (nitarshan/robust-generalization-measures, "
                                 "experiments/coupled_networks/create_environments.py and "
                                 "figure_cdf_all_measures.py): Hoeffding pair weights (w - 1/2)_+ at n_test "
                                 "test samples, weighted mean per environment, mean / 90th percentile / max over "
                                 "environments; accuracy gap only",
            "n_test": n_test,
            "min_ess": MIN_ESS,
            "sign_error_unweighted": "plain mean over coupled pairs (equal gaps left out, equal measures 1/2)",
        },
        "sample_size_adjustment": {
            c[len("log10_"):-len("_n_adj")]: sample_size_adjustment(c[len("log10_"):-len("_n_adj")])
            for c in models.columns if c.startswith("log10_") and c.endswith("_n_adj")},
        "measures": [c for c in models.columns if c.startswith("log10_")],
        "not_scored": ["frac_p_star_zero", "median_log10_scale_margin"],
        "measures_not_evaluated": not_evaluated,
        "timings_seconds": timings,
        "files": [Path(f).name for f in files] + ["config.json"],
    }
    write_json_atomic(out / "config.json", meta)
    files.append(str(out / "config.json"))
    emit(ProgressEvent(kind="end", done=len(rows), total=total,
                       message=f"{len(rows)} models ({n_cached} reused, {len(failed)} failed) in {wall:.1f} s"))
    return SweepResult(models=models, scores=scores, config=meta, files=files, failed=failed)
