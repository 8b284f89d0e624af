"""``specbound experiment sparse-majority``: the command of experiment E1."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from specbound.cli.console import (
    BAD_INPUT,
    USAGE,
    err,
    event_progress,
    fail,
    out,
    print_table,
    progress_bar,
)
from specbound.cli.options import check_outputs, check_positive
from specbound.errors import SpecboundError

if TYPE_CHECKING:
    pass

__all__ = ["sparse_majority"]


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
    protocol: str = typer.Option("fit", "--protocol", help="Training protocol: 'fit' (default: "
                                 "full-batch Adam lr 3e-3, beta2 0.9, warm-up + cosine over 8000 epochs, W_q/W_k "
                                 "x3, chosen by measurement so the runs reach 100% training accuracy) or 'literal' "
                                 "(experiments.md's SGD protocol, which leaves T >= 128 near chance). Every "
                                 "setting goes to config.json."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epoch cap (full-batch steps; "
                                             "default: the protocol's; quick: 300)."),
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

    Trains the one-layer attention model on sparse majority for every (T, seed), measures train/test accuracy and loss, weight norms and every bound proxy, and writes runs.csv, trends.csv (slope against log2 T with a 95% interval, over all runs and over fitted runs only, with the capped runs per T), config.json and plots. Finished runs are cached in OUT/runs/ and reused on rerun.
    """  # noqa: E501 (one line: rich help keeps line breaks)
    over: dict[str, Any] = {}
    try:
        if lengths is not None:
            over["lengths"] = _parse_lengths(lengths)
    except ValueError as e:
        fail(str(e), USAGE)
    for name, val, flag in (("n_seeds", seeds, "--seeds"), ("n_train", n_train, "--n-train"),
                            ("n_val", n_val, "--n-val"), ("n_test", n_test, "--n-test"),
                            ("max_epochs", max_epochs, "--max-epochs")):
        if val is not None:
            check_positive(flag, val)
            over[name] = val
    if seed < 0:
        fail(f"--seed {seed}: must be a non-negative integer.", USAGE)
    check_positive("--threads", threads)
    over.update(seed=seed, num_threads=threads)
    if protocol not in ("fit", "literal"):
        fail(f"--protocol {protocol!r}: choose 'fit' or 'literal'.", USAGE)
    from specbound.experiments.sparse_majority import (  # torch: once the plain checks passed
        QUICK_DEVIATIONS,
        protocol_config,
        quick_config,
        run_study,
    )

    cfg = quick_config(protocol, **over) if quick else protocol_config(protocol, **over)
    try:
        cfg.validate_study()
    except ValueError as e:
        fail(f"{e}.", USAGE)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir}: exists and is not a folder.", USAGE)
    check_outputs(folders=[(out_dir, "--out", ("runs.csv", "trends.csv", "config.json", "report.html"))])

    if quick:
        err.print("[yellow]--quick[/]: deviates from the E1 protocol: " + "; ".join(QUICK_DEVIATIONS),
                   highlight=False, soft_wrap=True)

    try:
        with progress_bar("sparse-majority runs", status=True) as update:
            on_progress = event_progress(update, verbose)
            result = run_study(cfg, out_dir, progress=on_progress, plots=plots)
    except FloatingPointError as e:
        fail(str(e), BAD_INPUT)
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    except OSError as e:
        fail(f"cannot write to {out_dir}: {e.strerror or e}", BAD_INPUT)
    _summary(result, out_dir, plots)
    from specbound.report.experiments import write_experiment_page

    try:
        out.print(f"report: {write_experiment_page('sparse-majority', result, out_dir)}", highlight=False)
    except OSError as e:
        fail(f"cannot write {out_dir}/report.html: {e.strerror or e}", BAD_INPUT)


def _summary(result: dict[str, Any], out_dir: Path, plots: bool) -> None:
    runs, trends, meta = result["runs"], result["trends"], result["config"]
    n_cap = int(runs["stopped_at_cap"].sum())
    out.print(f"protocol {meta['protocol']['name']}", highlight=False)
    out.print(
        f"{len(runs)} runs ({meta['runs_reused_from_cache']} reused from cache) in "
        f"{meta['wall_time_seconds']:.1f} s", highlight=False)
    if n_cap:
        out.print(
            f"[yellow]{n_cap} of {len(runs)} runs stopped at the epoch cap "
            f"({meta['config']['max_epochs']}) before 100% training accuracy "
            f"(reached {runs['reached_train_acc'].min():.3f}–{runs['reached_train_acc'].max():.3f}).[/]",
            highlight=False)
    by_t = runs.groupby("T")[["reached_train_acc", "test_acc"]].mean()
    out.print("mean reached training / test accuracy by T: " + ", ".join(
        f"{T}: {r.reached_train_acc:.2f}/{r.test_acc:.2f}" for T, r in by_t.iterrows()), highlight=False)
    if not meta.get("bounds_available", True):
        out.print("[yellow]specbound.analyze is not available: bound columns left out.[/]", highlight=False)
    show = (["acc_gap", "loss_gap", "test_acc", "l1_sum_all_variables", "l1_sum_weights_only"]
            + list(meta.get("bound_columns", [])) + ["frac_p_star_zero", "median_log10_scale_margin"])
    caps = meta.get("runs_stopped_at_cap_per_T", {})
    n_t = runs.groupby("T").size()
    cap_text = ", ".join(f"T={T}: {c}/{int(n_t.loc[int(T)])}" for T, c in caps.items())
    t = Table(title="Slope against log2 T (per doubling), 95% interval: all runs | fitted runs only",
              title_justify="left",
              caption=f"runs stopped at the epoch cap per T: {cap_text}. l1_sum_all_variables: Trauger & "
                      "Tewari's tracked quantity (every trainable variable, biases included). "
                      "frac_p_star_zero, median_log10_scale_margin: B_SA's adaptivity (bounds.md section 4)",
              caption_justify="left")
    for c in ("quantity", "mean", "slope (all)", "95% CI (all)", "slope (fitted)", "95% CI (fitted)", "n fitted"):
        t.add_column(c, justify="left" if c == "quantity" else "right", no_wrap=True)

    def num(v: Any, spec: str) -> str:
        return "n/a" if v is None or v != v else format(v, spec)

    for q in show:
        sub = trends[trends["quantity"] == q].set_index("runs")
        if sub.empty:
            continue
        a, f = sub.loc["all"], sub.loc["fitted"]
        t.add_row(q, num(a["mean"], ".4g"), num(a["slope_per_doubling"], "+.4g"),
                  f"[{num(a['ci_low'], '+.3g')}, {num(a['ci_high'], '+.3g')}]",
                  num(f["slope_per_doubling"], "+.4g"),
                  f"[{num(f['ci_low'], '+.3g')}, {num(f['ci_high'], '+.3g')}]", str(int(f["n"])))
    print_table(out, t)
    out.print(f"Wrote {out_dir}/runs.csv, trends.csv, config.json{' and plots' if plots else ''}", highlight=False)
