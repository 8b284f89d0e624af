"""``specbound experiment correlation``: the command of experiment E3."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from specbound.cli.console import BAD_INPUT, USAGE, err, fail, print_table, progress_bar
from specbound.cli.console import out as con
from specbound.cli.options import check_outputs, check_positive, ray_target
from specbound.errors import SpecboundError

__all__ = ["HELP", "correlation"]

HELP = """E3: which complexity measure tracks the generalisation gap? (Jiang et al. 2020 style scores.)

Trains a full-factorial sweep of small BERT encoders on a synthetic task (--task
sparse-majority: T = 32 bits, majority of 7 hidden positions, [CLS] classifier;
masked-synthetic: masked-token prediction on the seeded synthetic language of E2), measures
each model's gap (train accuracy - test accuracy on fresh data of the same distribution) and
evaluates every bound family of the catalogue on its weights (initial weights as the
reference for distance-based families), plus each family adjusted for n_train (sqrt(mu/n) for
squared measures, as Dziugaite et al.'s code does; C/sqrt(n) for the others).

Default grid (128 models): depth {1,2} x width {32,64} x n_train {128,1024} x weight decay
{0,0.1} x lr {1e-3,3e-3} x label noise {0,0.2} x steps {200,800}. --quick: 16 models (depth,
n_train, label noise, steps; width 32), a few minutes on 2 cores. --grid FILE (YAML or JSON)
changes it: keys task, axes (lists of values), base (values of axes not swept), settings.

Runs on a local process pool (--jobs, default: the number of cores) or as one Ray task per
model: --ray starts a local Ray instance, --ray-address ADDRESS joins a cluster. Finished models
are cached in OUT/models/ and reused, so an interrupted sweep resumes where it stopped.

Writes OUT/models.csv (hyper-parameters, train/test metrics, gaps, every measure),
OUT/report.html (one self-contained page: ranking, models, plots, config, versions),
OUT/scores.csv (per target gap and measure: Kendall tau-a and tau-b, granulated tau per axis
and mean with the number of constant-gap groups, Dziugaite et al.'s robust sign error (max,
90th percentile, mean over environments), the unweighted sign error, number of models), OUT/config.json (config, versions,
timings), OUT/ranking.png and OUT/plots/scatter_<measure>.png.
"""


def correlation(
    task: Optional[str] = typer.Option(None, "--task", help="sparse-majority (default) or masked-synthetic."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="YAML/JSON file with the sweep's axes (see above)."),
    out: Path = typer.Option(Path("specbound-e3"), "--out", help="Output folder (model cache reused on rerun)."),
    quick: bool = typer.Option(False, "--quick", help="The 16-model preset (a few minutes on 2 cores)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data, initialisations and mini-batches."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Local worker processes (default: cores)."),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray, on a local instance started for the sweep."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Run on the Ray cluster at ADDRESS (auto or HOST:PORT); implies --ray."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the scatter plots and the ranking chart."),
    top: int = typer.Option(15, "--top", help="Rows of the ranking table printed (all are in scores.csv)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print one line per finished model."),
) -> None:
    """E3: which complexity measure tracks the generalisation gap?"""
    if task is not None and task not in ("sparse-majority", "masked-synthetic"):
        fail(f"--task {task!r}: choose sparse-majority or masked-synthetic.", USAGE)
    if seed < 0:
        fail(f"--seed {seed}: must be a non-negative integer.", USAGE)
    if jobs is not None:
        check_positive("--jobs", jobs)
    check_positive("--top", top)
    target = ray_target(ray, ray_address)
    if target is not None and jobs is not None:
        fail("--jobs and --ray exclude each other: Ray decides where the tasks run.", USAGE)
    check_outputs(folders=[(out, "--out", ("models.csv", "scores.csv", "config.json"))])
    from specbound.experiments.correlation import (
        default_config,
        load_grid,
        quick_config,
        run_sweep,
    )

    try:
        if grid is not None:
            cfg = load_grid(grid, task=task, seed=seed, quick=quick)
        else:
            cfg = (quick_config if quick else default_config)(task or "sparse-majority", seed)
        with progress_bar(f"E3 {cfg.task}") as update:
            def on_event(ev: Any) -> None:
                if ev.kind in ("start", "run"):
                    update(ev.done, ev.total, f"E3 {cfg.task}")
                if verbose and ev.kind == "run":
                    err.print(ev.message, highlight=False, soft_wrap=True)

            res = run_sweep(cfg, out, jobs=jobs or (os.cpu_count() or 1), ray_address=target,
                            progress=on_event, plots=plots)
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    for model_id, msg in res["failed"]:
        err.print(f"[yellow]failed:[/] {escape(str(model_id))}: {escape(str(msg))}", highlight=False, soft_wrap=True)
    meta = res["config"]
    con.print(f"E3 {cfg.task}: {len(res['models'])} models ({meta['models_reused_from_cache']} reused from "
              f"the cache) in {meta['wall_time_seconds']:.0f} s; granulated over {', '.join(meta['granulated_over'])}",
              highlight=False, soft_wrap=True)
    _print_ranking(con, res["scores"], top, res["models"])
    con.print(f"wrote {out}/ (models.csv, scores.csv, config.json{', plots' if plots else ''})", highlight=False,
              soft_wrap=True)
    from specbound.report.experiments import write_experiment_page

    try:
        page = write_experiment_page("correlation", res, out)
    except OSError as e:
        fail(f"cannot write {out}/report.html: {e.strerror or e}", BAD_INPUT)
    con.print(f"report: {page}", highlight=False, soft_wrap=True)


def _print_ranking(con: Any, scores: Any, top: int, models: Any = None) -> None:
    from rich.table import Table

    def f(v: Any) -> str:
        return "n/a" if v is None or v != v else f"{v:+.3f}"

    from rich import box

    sub = scores[scores["target"] == "gap"].head(top)
    t = Table(title="measures ranked by granulated Kendall τ with the accuracy gap", box=box.SIMPLE_HEAD,
              pad_edge=False, collapse_padding=True,
              caption="τ-a: Kendall τ-a over all models (Jiang et al. 2020 eq. 2; τ-b beside it); gran. τ: mean "
                      "over axes of τ-a over every one-axis group (± approximate standard error); robust sign "
                      "error: Dziugaite et al. 2020, Hoeffding-weighted per environment, max / 90th percentile / "
                      "mean over environments (env: kept); unweighted: plain mean over coupled pairs; n: models. "
                      "*_n_adj: adjusted for n_train (sqrt(mu/n) for squared measures, C/sqrt(n) otherwise). "
                      "All in scores.csv")
    for c in ("#", "measure", "τ-a", "τ-b", "gran. τ", "± se", "rob. max", "p90", "mean", "env",
              "unweighted", "n"):
        t.add_column(c, justify="left" if c == "measure" else "right", no_wrap=True)

    def plain(v: Any) -> str:
        return "n/a" if v is None or v != v else f"{v:.3f}"

    for r in sub.to_dict("records"):
        t.add_row(str(r["rank"]), r["measure"], f(r["kendall_tau"]), f(r["kendall_tau_b"]),
                  f(r["granulated_tau_mean"]), plain(r["granulated_tau_mean_se"]),
                  plain(r["robust_sign_error_max"]), plain(r["robust_sign_error_p90"]),
                  plain(r["robust_sign_error_mean"]), str(r["n_environments"]),
                  plain(r["sign_error_unweighted"]), str(r["n_models"]))
    print_table(con, t)
    from specbound.report.experiments import adaptivity_line

    line = adaptivity_line(models)
    if line:
        con.print(line, highlight=False, soft_wrap=True)
