"""``specbound analyze``: one checkpoint (a report folder and a summary) or several (one report
per checkpoint, ``combined.csv`` and a table; :mod:`specbound.parallel`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from specbound.cli.console import BAD_INPUT, USAGE, err, error_line, fail, out, progress_bar
from specbound.cli.options import (
    check_analysis_options,
    check_device,
    check_outputs,
    parse_size,
    ray_target,
    stdout_targets,
)
from specbound.cli.summary import print_summary
from specbound.errors import SpecboundError

__all__ = ["analyze"]


def analyze(
    source: Optional[list[str]] = typer.Argument(
        None, help="Checkpoint: HF folder, .safetensors file, sharded folder, or hub id. "
        "Default: the packaged all-MiniLM-L6-v2. Several: one report per checkpoint in a "
        "subfolder of --out and --out/combined.csv (see --jobs, --ray, --ray-address)."
    ),
    out_dir: Path = typer.Option(Path("specbound-report"), "--out", help="Report folder (report.html, JSON, CSV, plots)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also write the JSON report here."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Also write the per-matrix table here."),
    html_file: Optional[Path] = typer.Option(
        None, "--html", help="Also write the self-contained HTML page here (every --out folder has report.html)."
    ),
    config: Optional[Path] = typer.Option(None, "--config", help="config.json to use instead of the checkpoint's."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", help="JSON name mapping for custom models."),
    bounds: str = typer.Option("all", "--bounds", help="Comma-separated bound families, or 'all'."),
    dense: bool = typer.Option(False, "--dense", help="Form every product and take dense SVDs (parity)."),
    dtype: str = typer.Option("float64", "--dtype", help="float64 or float32."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    l_phi: Optional[float] = typer.Option(
        None, "--l-phi", help="Lipschitz constant of the activation (default: from the config's activation; GELU 1.13, SiLU 1.1, ReLU 1)."
    ),
    grid_m: Optional[int] = typer.Option(None, "--grid-m", help="Schatten grid resolution m (default ceil(L + ln N))."),
    ff_method: str = typer.Option("auto", "--ff-method", help="Feed-forward spectra: auto, gram or svd."),
    plots: bool = typer.Option(
        True, "--plots/--no-plots", help="Draw the plots (PNG files, embedded in report.html); --no-plots "
        "removes old plots from --out."
    ),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Sequence length T for families with a log T factor."),
    init: Optional[str] = typer.Option(None, "--init", help="Reference checkpoint (same architecture): distances A - A_0."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Spectra cache folder (keyed by tensor content): reruns do no linear algebra."
    ),
    approx: bool = typer.Option(
        False, "--approx", help="Matrix-free estimates of the feed-forward spectra, with error columns (giant models)."
    ),
    max_memory: Optional[str] = typer.Option(
        None, "--max-memory", help="Memory the concurrent linear-algebra tasks may hold at once, e.g. 2G "
        "(default: half the memory available at the start); a task that does not fit waits."
    ),
    jobs: int = typer.Option(1, "--jobs", help="Several SOURCEs: local worker processes."),
    ray: bool = typer.Option(
        False, "--ray", help="Several SOURCEs: run on Ray, on a local instance started for the run "
        "(needs specbound\\[ray])."
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Several SOURCEs: run on the Ray cluster at ADDRESS "
        "(auto or HOST:PORT); implies --ray."
    ),
    # -- the data side (bounds.md §8; `specbound attention` has every option) ------------------
    text: Optional[Path] = typer.Option(
        None, "--text", help="Add the data side: attention on this text (one sequence per line); "
        "tables in --out/attention/, the measure attention_effective_rank among the families."
    ),
    token_ids: Optional[Path] = typer.Option(
        None, "--token-ids", help="Add the data side on pre-tokenised ids (JSON list of lists)."
    ),
) -> None:
    """Spectra, per-matrix measures and bound proxies of one checkpoint."""
    check_analysis_options(dtype=dtype, device=device, ff_method=ff_method, grid_m=grid_m, l_phi=l_phi, jobs=jobs,
                           dense=dense, approx=approx)
    target = ray_target(ray, ray_address)
    options: dict[str, Any] = dict(
        config=config, mapping=mapping, bounds=bounds, l_phi=l_phi, grid_m=grid_m, dtype=dtype, device=device,
        dense=dense, ff_method=ff_method, seq_len=seq_len, init=init, cache=cache, approx=approx,
        max_memory=parse_size("--max-memory", max_memory),
    )
    sources = list(source or [])
    data_side = _data_side_options(text, token_ids, len(sources))
    options.update(data_side)
    if len(sources) > 1:
        if json_file is not None or csv_file is not None or html_file is not None:
            fail("--json/--csv/--html take one checkpoint; with several SOURCEs every report is in --out/<name>/.", USAGE)
        check_outputs(folders=[(out_dir, "--out", ("combined.csv",))])
        check_device(device)
        _analyze_many(sources, out_dir, jobs=jobs, ray_address=target, plots=plots, **options)
        return
    to_stdout = stdout_targets(json=json_file, csv=csv_file, html=html_file)
    from specbound.report.io import PLOT_FILES, REPORT_FILES

    check_outputs(folders=[(out_dir, "--out", REPORT_FILES + PLOT_FILES, ("attention",) if data_side else ())],
                  files=[(json_file, "--json"), (csv_file, "--csv"), (html_file, "--html")])
    check_device(device)
    from specbound.analysis import analyze as run  # torch, pandas: imported once the options are known good
    from specbound.report import stale_plots, write_report

    try:
        with progress_bar("analysing layers") as update:
            if data_side:  # the data side's forward passes on the same bar, after the layers
                options["attention_options"] = {"progress": lambda done, total: update(
                    done, total, description="data side: forward passes (batches)")}
            report = run(sources[0] if sources else None, progress=update, **options)
        removed = [] if plots or not out_dir.is_dir() else stale_plots(out_dir)
        with progress_bar("writing report") as update:
            written = write_report(report, out_dir, json_path=json_file, csv_path=csv_file, html_path=html_file,
                                   plots=plots)
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    # a document on stdout: the human summary goes to stderr, so the stream stays parseable
    console = err if to_stdout else out
    try:
        before_files = None
        if report.attention is not None:  # the data-side summary before the lines naming the files
            from specbound.cli.attention import print_attention_summary

            before_files = partial(print_attention_summary, report.attention, console=console)
        print_summary(report, written, out_dir, html_file=None if to_stdout == ["--html"] else html_file,
                      removed=removed, console=console, before_files=before_files)
    except KeyboardInterrupt:
        from specbound.writing import Interrupted

        raise Interrupted(f"interrupted; the report was written to {out_dir}") from None


def _data_side_options(text: Path | None, token_ids: Path | None, n_sources: int) -> dict[str, Any]:
    """``analyze``'s keywords for the data side (``--text`` / ``--token-ids``), checked."""
    if text is None and token_ids is None:
        return {}
    if text is not None and token_ids is not None:
        fail("--text and --token-ids exclude each other: pass one.", USAGE)
    if n_sources > 1:
        fail("--text/--token-ids take one checkpoint (use `specbound attention` per checkpoint).", USAGE)
    return {"texts": text} if text is not None else {"token_ids": token_ids}


def _analyze_many(sources: list[str], out_dir: Path, *, jobs: int, ray_address: str | None, plots: bool,
                  **kwargs: Any) -> None:
    """Several checkpoints (specbound/parallel.py): progress over checkpoints, a summary table."""
    from specbound.parallel import analyze_many

    try:
        with progress_bar(f"analysing {len(sources)} checkpoints") as update:
            table, failed = analyze_many(sources, out_dir, jobs=jobs, ray_address=ray_address, plots=plots,
                                         progress=update, **kwargs)
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    if not len(table) and failed:  # every SOURCE failed: the failures, no empty table
        for src, msg in failed:
            error_line(msg if src in msg else f"{src}: {msg}")
        fail(f"none of the {len(failed)} checkpoints could be analysed; nothing written to {out_dir}.", BAD_INPUT)
    t = Table(title="Checkpoints (log10 of the main proxies; every family in combined.csv)", title_justify="left")
    main = [c for c in ("log10_spectrum_adaptive", "log10_edelman") if c in table.columns]
    cols = ["report", "model_type", "L", "N"] + (main or [c for c in table.columns if c.startswith("log10_")][:2])
    for c in cols:
        t.add_column(c.removeprefix("log10_"), justify="left" if c in ("report", "model_type") else "right")
    for _, r in table.iterrows():
        t.add_row(*[_cell(r[c]) for c in cols])
    out.print(t)
    if len(table):
        out.print(f"Reports written to [bold]{out_dir}[/] (one folder per checkpoint, combined.csv)", highlight=False)
    for src, msg in failed:
        error_line(msg if src in msg else f"{src}: {msg}")
    if failed:
        raise typer.Exit(BAD_INPUT)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return f"{v:.3f}" if isinstance(v, float) else str(v)
