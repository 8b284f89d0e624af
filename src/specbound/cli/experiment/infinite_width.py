"""``specbound experiment infinite-width``: the command of experiment E4."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

__all__ = ["HELP", "infinite_width"]

SWEEPS = {"n": "n_sweep", "H": "H_sweep", "relu": "relu_n_sweep", "lowrank": "lowrank_H_sweep"}

HELP = """E4: the infinite-width limit of one attention layer is not Gaussian (Sakai, Karakida & Imaizumi 2025).

Samples y[1,1] of one multi-head attention layer (s = 4 tokens) at finite width with an exact fast sampler (Wishart/Bartlett algebra, cost independent of n) and from its hierarchical limit (Gaussian given random scores), and measures KL(finite || limit), KL(limit || N(0, sigma2_inf)) and KL(finite || N(0, sigma2_inf)) from the exact mixture densities (no kernel), with the estimator's floor (two independent limit draws).

Sweeps: n in {16,64,256,1024} at H = 2 (identity and ReLU tokens); H in {1,2,...,256} at n = 256; low rank n_H = 64, n = 64 H, H in {1,...,256}. Default 10 seeds, 50,000 samples per setting (ReLU: twice --samples). Writes OUT/report.html (one self-contained page: tables, plots, config, versions), kl.csv, summary.csv, headline.json, densities.json, config.json and PNG plots; finished (sweep, seed) units in OUT/units/ are reused on rerun.
"""


def _parse_sweeps(text: str) -> tuple[str, ...]:
    names = [t for t in text.replace(" ", "").split(",") if t]
    bad = [t for t in names if t not in SWEEPS]
    if not names or bad:
        raise ValueError(f"--sweeps {text!r}: give a comma-separated subset of {','.join(SWEEPS)}")
    return tuple(SWEEPS[t] for t in SWEEPS if t in names)


def infinite_width(
    quick: bool = typer.Option(False, "--quick", help="2 seeds, 10,000 samples (ReLU 20,000): under a minute "
                               "on 2 cores; listed as deviations in config.json."),
    seeds: int | None = typer.Option(None, "--seeds", help="Seeds per setting (default 10; quick: 2)."),
    samples: int | None = typer.Option(None, "--samples", help="Draws per setting and seed (default 50000; "
                                          "quick: 10000); ReLU tokens use twice this."),
    out_dir: Path = typer.Option(Path("specbound-e4"), "--out", help="Output folder (tables, plots, unit cache)."),
    seed: int = typer.Option(0, "--seed", help="Base seed; unit (sweep, k) uses the streams (seed, sweep, k, ...)."),
    kl: str = typer.Option("mixture", "--kl", help="KL estimator: mixture (exact densities on a grid) or kde "
                           "(the authors' Gaussian-KDE estimate on 500 points)."),
    sweeps: str = typer.Option("n,H,relu,lowrank", "--sweeps", help="Comma-separated subset of n, H, relu, lowrank."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG plots."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print one line per finished (sweep, seed) unit."),
) -> None:
    """E4: KL of one attention layer's output at finite width to its non-Gaussian infinite-width limit."""
    over: dict[str, Any] = {}
    for name, val, flag in (("n_seeds", seeds, "--seeds"), ("samples", samples, "--samples")):
        if val is not None:
            check_positive(flag, val)
            over[name] = val
    if samples is not None:
        if samples < 100:
            fail(f"--samples {samples}: need at least 100 draws per setting.", USAGE)
        over["relu_samples"] = 2 * samples
    if seed < 0:
        fail(f"--seed {seed}: must be a non-negative integer.", USAGE)
    if kl not in ("mixture", "kde"):
        fail(f"--kl {kl!r}: use mixture or kde.", USAGE)
    try:
        over["experiments"] = _parse_sweeps(sweeps)
    except ValueError as e:
        fail(f"{e}.", USAGE)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir}: exists and is not a folder.", USAGE)
    over.update(seed=seed, kl=kl)
    check_outputs(folders=[(out_dir, "--out", ())])

    from specbound.experiments.infinite_width import (
        QUICK_DEVIATIONS,
        InfiniteWidthConfig,
        quick_config,
        run_study,
    )

    cfg = quick_config(**over) if quick else InfiniteWidthConfig(**over)
    try:
        cfg.validate()
    except ValueError as e:
        fail(f"{e}.", USAGE)
    if quick:
        err.print("[yellow]--quick[/]: deviates from the E4 protocol: " + "; ".join(QUICK_DEVIATIONS),
                  highlight=False, soft_wrap=True)
    try:
        with progress_bar("E4 infinite-width", status=True) as update:
            on_progress = event_progress(update, verbose)
            res = run_study(cfg, out_dir, progress=on_progress, plots=plots)
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    except OSError as e:
        fail(f"cannot write to {out_dir}: {e.strerror or e}", BAD_INPUT)
    _report(res, out_dir)
    from specbound.report.experiments import write_experiment_page

    try:
        page = write_experiment_page("infinite-width", res, out_dir)
    except OSError as e:
        fail(f"cannot write {out_dir}/report.html: {e.strerror or e}", BAD_INPUT)
    out.print(f"report: {page}", highlight=False, soft_wrap=True)


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1e}"


def _report(res: Any, out_dir: Path) -> None:
    meta = res.config
    out.print(f"E4: {meta['units']} (sweep, seed) units ({meta['units_reused_from_cache']} reused from cache); "
              f"compute {meta['compute_seconds_total']:.0f} s, this run {meta['wall_time_seconds']:.1f} s",
              highlight=False)
    t = Table(title=f"KL in nats, mean over seeds (sd: over seeds; N = N(0, σ²∞); estimator: {meta['config']['kl']})",
              title_justify="left", caption="fin = finite width, lim = the infinite-width limit",
              caption_justify="left")
    for c in ("sweep", "n", "H", "fin‖lim", "sd", "lim‖N", "fin‖N", "floor"):
        t.add_column(c, justify="left" if c == "sweep" else "right", no_wrap=True)
    short = {v: k for k, v in SWEEPS.items()}
    for r in res.summary.itertuples(index=False):
        t.add_row(short.get(r.experiment, str(r.experiment)), str(r.n), str(r.H), _fmt(r.kl_to_limit_mean),
                  _fmt(r.kl_to_limit_sd), _fmt(r.kl_limit_to_gaussian_mean), _fmt(r.kl_to_gaussian_mean),
                  _fmt(r.floor_mean))
    print_table(out, t)
    for exp, h in res.headline.items():
        sl = h["slope_kl_to_limit"]
        if h["axis"] == "n":
            out.print(f"{exp}: KL(finite ‖ limit) ∝ n^{sl['slope']:.2f} (95% CI [{sl['ci_low']:.2f}, "
                      f"{sl['ci_high']:.2f}], {sl['points']} points)", highlight=False)
        else:
            g = h["slope_kl_limit_to_gaussian"]
            res_h = [f"H={p['H']}: {'yes' if p['kl_limit_to_gaussian_resolved'] else 'no'}"
                     for p in h["per_H"] if p["H"] <= 4]
            out.print(f"{exp}: KL(limit ‖ N) ∝ H^{g['slope']:.2f} (95% CI [{g['ci_low']:.2f}, {g['ci_high']:.2f}]); "
                      f"resolved above the floor: {', '.join(res_h)}", highlight=False)
    out.print(f"Wrote {out_dir}/kl.csv, summary.csv, headline.json, config.json" + (" and plots" if any(
        str(f).endswith(".png") for f in res.files) else ""), highlight=False)
