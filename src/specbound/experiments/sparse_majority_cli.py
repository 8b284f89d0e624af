"""``specbound experiment sparse-majority``: the typer command of experiment E1.

Registered on the ``experiment`` sub-app of :mod:`specbound.cli` by :func:`register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

_out = Console()
_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _parse_lengths(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise ValueError(f"--lengths {text!r}: give comma-separated integers, e.g. 16,32,64") from None
    if not vals:
        raise ValueError("--lengths is empty: give comma-separated integers, e.g. 16,32,64")
    return vals


def sparse_majority(
    lengths: Optional[str] = typer.Option(
        None, "--lengths", help="Comma-separated sequence lengths T (default 16,32,64,128,256,512; "
        "quick: 16,32,64)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Runs (seeds) per length (default 4; quick: 2)."),
    n_train: Optional[int] = typer.Option(None, "--n-train", help="Training samples per run (default 300)."),
    n_val: Optional[int] = typer.Option(None, "--n-val", help="Validation samples for model selection "
                                        "(default 500; quick: 300)."),
    n_test: Optional[int] = typer.Option(None, "--n-test", help="Fresh test samples per run (default 10000; "
                                         "quick: 2000)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epoch cap (full-batch steps; "
                                             "default 16000; quick: 300)."),
    out_dir: Path = typer.Option(Path("specbound-e1"), "--out", help="Output folder (tables, plots, run cache)."),
    seed: int = typer.Option(0, "--seed", help="Base seed; run (T, k) uses the stream (seed, T, k)."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (results are bit-reproducible "
                                "for a fixed thread count)."),
    quick: bool = typer.Option(False, "--quick", help="Small preset that finishes in under two minutes "
                               "on 2 cores; deviates from the protocol (listed in config.json)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG plots."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print one line per finished run."),
) -> None:
    """E1 sparse majority (Trauger & Tewari 2024): does the gap, the l1 norm or a bound proxy grow with T?

    Trains the one-layer attention model on sparse majority for every (T, seed), measures train/test accuracy and loss, weight norms and every bound proxy, and writes runs.csv, trends.csv (slope against log2 T with a 95% interval), config.json and plots. Finished runs are cached in OUT/runs/ and reused on rerun.
    """  # noqa: E501 (one line: rich help keeps line breaks)
    from specbound.errors import SpecboundError
    from specbound.experiments.common import ProgressEvent
    from specbound.experiments.sparse_majority import (
        QUICK_DEVIATIONS,
        SparseMajorityConfig,
        quick_config,
        run_study,
    )

    over: dict = {}
    try:
        if lengths is not None:
            over["lengths"] = _parse_lengths(lengths)
    except ValueError as e:
        _fail(str(e))
    for name, val, flag in (("n_seeds", seeds, "--seeds"), ("n_train", n_train, "--n-train"),
                            ("n_val", n_val, "--n-val"), ("n_test", n_test, "--n-test"),
                            ("max_epochs", max_epochs, "--max-epochs")):
        if val is not None:
            if val < 1:
                _fail(f"{flag} {val}: must be a positive integer.")
            over[name] = val
    if seed < 0:
        _fail(f"--seed {seed}: must be a non-negative integer.")
    if threads < 1:
        _fail(f"--threads {threads}: must be a positive integer.")
    over.update(seed=seed, num_threads=threads)
    cfg = quick_config(**over) if quick else SparseMajorityConfig(**over)
    try:
        cfg.validate()
    except ValueError as e:
        _fail(f"{e}.")
    if out_dir.exists() and not out_dir.is_dir():
        _fail(f"--out {out_dir}: exists and is not a folder.")

    if quick:
        _err.print("[yellow]--quick[/]: deviates from the E1 protocol: " + "; ".join(QUICK_DEVIATIONS),
                   highlight=False, soft_wrap=True)

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=_err,
                   transient=True, disable=not _err.is_terminal)
    task = bar.add_task("sparse-majority runs", total=None, status="")

    def on_progress(ev: ProgressEvent) -> None:
        if ev.kind == "start":
            bar.update(task, total=ev.total, completed=0)
        elif ev.kind == "group":
            bar.update(task, status=ev.message)
        elif ev.kind == "run":
            bar.update(task, completed=ev.done, status="")
            if verbose:
                bar.console.print(f"[{ev.done}/{ev.total}] {ev.message}", highlight=False, soft_wrap=True)

    try:
        with bar:
            result = run_study(cfg, out_dir, progress=on_progress, plots=plots)
    except SpecboundError as e:
        _fail(str(e), 1)
    except OSError as e:
        _fail(f"cannot write to {out_dir}: {e.strerror or e}", 1)
    _summary(result, out_dir)


def _summary(result: dict, out_dir: Path) -> None:
    runs, trends, meta = result["runs"], result["trends"], result["config"]
    n_cap = int(runs["stopped_at_cap"].sum())
    _out.print(
        f"{len(runs)} runs ({meta['runs_reused_from_cache']} reused from cache) in "
        f"{meta['wall_time_seconds']:.1f} s", highlight=False)
    if n_cap:
        _out.print(
            f"[yellow]{n_cap} of {len(runs)} runs stopped at the epoch cap "
            f"({meta['config']['max_epochs']}) before 100% training accuracy "
            f"(reached {runs['reached_train_acc'].min():.3f}–{runs['reached_train_acc'].max():.3f}).[/]",
            highlight=False)
    by_t = runs.groupby("T")[["reached_train_acc", "test_acc"]].mean()
    _out.print("mean reached training / test accuracy by T: " + ", ".join(
        f"{T}: {r.reached_train_acc:.2f}/{r.test_acc:.2f}" for T, r in by_t.iterrows()), highlight=False)
    if not meta.get("bounds_available", True):
        _out.print("[yellow]specbound.analyze is not available: bound columns left out.[/]", highlight=False)
    show = ["acc_gap", "loss_gap", "test_acc", "l1_norm_sum"] + list(meta.get("bound_columns", []))
    t = Table(title="Slope against log2 T (per doubling), 95% interval", title_justify="left")
    for c in ("quantity", "mean", "slope", "95% CI", "0 in CI"):
        t.add_column(c, justify="left" if c == "quantity" else "right", no_wrap=True)
    tr = trends.set_index("quantity")
    for q in show:
        if q not in tr.index:
            continue
        r = tr.loc[q]
        t.add_row(q, f"{r['mean']:.4g}", f"{r['slope_per_doubling']:+.4g}",
                  f"[{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]", str(r["ci_contains_zero"]))
    _out.print(t)
    _out.print(f"Wrote {out_dir}/runs.csv, trends.csv, config.json and plots", highlight=False)


def register(experiment_app: typer.Typer) -> None:
    """Add ``sparse-majority`` to the ``specbound experiment`` sub-app."""
    experiment_app.command("sparse-majority")(sparse_majority)
