"""The ``specbound`` command. Only this module prints."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from specbound.errors import SpecboundError

app = typer.Typer(
    name="specbound",
    help="Per-head spectra and generalisation-bound proxies of trained Transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
experiment_app = typer.Typer(help="Experiments E1-E3 (see the README).", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error and exit (1: bad input, 2: usage)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (hidden when stderr is not a terminal); yields
    ``update(done, total, description=None)``."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int, description: str | None = None) -> None:
        bar.update(task, completed=done, total=total, description=description or description_)

    description_ = description

    with bar:
        yield update


def _fmt(v: float | None, log10: float) -> str:
    return f"{v:.4g}" if v is not None else f"10^{log10:.2f}"


def print_summary(report, written: list[Path], out_dir: Path | None) -> None:
    m = report.model
    out.print(
        f"[bold]{m.model_type}[/]  L={m.n_layers}  N={m.d_model}  H={m.n_heads}  H_kv={m.n_kv_heads}  "
        f"d_h={m.d_head}  d_ff={m.d_ff}  ({m.source})",
        highlight=False,
    )
    t = Table(title="Bound families (proxies, baselines, measures: not calibrated bounds; see `specbound bounds`)",
              title_justify="left")
    for col in ("family", "value", "log10", "status"):
        t.add_column(col, justify="right" if col in ("value", "log10") else "left")
    for name, b in report.bounds.items():
        t.add_row(name, _fmt(b.value, b.log10_value), f"{b.log10_value:.4f}", b.status)
    out.print(t)
    for ne in getattr(report, "not_evaluated", []):
        out.print(f"[yellow]not evaluated[/] {ne['bound']}: {ne['reason']}", highlight=False)

    mat = report.matrices
    lt = Table(
        title="Per layer: mean p* of the heads, largest σ1 (C_2), log10 α, max rank QK/OV",
        title_justify="left",
    )
    for col in ("layer", "p*QK", "p*OV", "p*in", "p*out", "σ1 QK", "σ1 OV", "σ1 in", "σ1 out",
                "log10 α", "rank"):
        lt.add_column(col, justify="right", no_wrap=True)
    # plain lists per column (one pass; pandas selections per layer cost ~0.1 s on BERT-base)
    cols = {c: mat[c].tolist() for c in ("layer", "kind", "p_star", "spectral_norm", "log10_alpha", "rank")}
    by_layer: dict = {}
    for i, (layer, kind) in enumerate(zip(cols["layer"], cols["kind"])):
        by_layer.setdefault(layer, {}).setdefault(kind, []).append(i)
    for layer in sorted(by_layer):
        g = by_layer[layer]

        def col(c: str, kind: str) -> list:
            return [cols[c][i] for i in g.get(kind, [])]

        mi, mo = g["M_in"][0], g["M_out"][0]
        lt.add_row(
            str(layer), f"{_mean(col('p_star', 'QK')):.2f}", f"{_mean(col('p_star', 'OV')):.2f}",
            f"{cols['p_star'][mi]:.2f}", f"{cols['p_star'][mo]:.2f}", f"{_max(col('spectral_norm', 'QK')):.3g}",
            f"{_max(col('spectral_norm', 'OV')):.3g}", f"{cols['spectral_norm'][mi]:.3g}",
            f"{cols['spectral_norm'][mo]:.3g}", f"{cols['log10_alpha'][mi]:.2f}",
            f"{int(_max(col('rank', 'QK')))}/{int(_max(col('rank', 'OV')))}",
        )
    out.print(lt)
    notes = [n for n in m.notes]
    for n in notes:
        out.print(f"[yellow]note[/] {n.code}: {n.message}", highlight=False)
    na = report.not_analysed
    if na:
        n_params = sum(_prod(x["shape"]) for x in na)
        out.print(
            f"Not analysed (outside the proxies: embeddings, biases, norms, heads): {len(na)} tensors, "
            f"{n_params:,} parameters; listed in not_analysed.csv / report.json.",
            highlight=False,
        )
    warm = report.options.get("warm_start") or {}
    early = (f" ({warm['used']} feed-forward spectra were computed before, while torch was loading)"
             if warm.get("used") else "")
    out.print(f"Analysed {len(mat)} matrices in {report.elapsed_s:.2f} s{early}.", highlight=False)
    if out_dir is not None:
        out.print(f"Report written to [bold]{out_dir}[/]", highlight=False)
    for p in written:
        if out_dir is None or p.parent != out_dir:
            out.print(f"Wrote {p}", highlight=False)


def _mean(values: list) -> float:
    """Mean as pandas' ``Series.mean`` computes it (NaN skipped: numpy sum / count)."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None and x == x], dtype=np.float64)
    return float(v.sum() / v.size) if v.size else float("nan")


def _max(values: list) -> float:
    """Max as pandas' ``Series.max`` computes it (NaN skipped)."""
    v = [x for x in values if x is not None and x == x]
    return max(v) if v else float("nan")


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@app.command()
def analyze(
    source: Optional[list[str]] = typer.Argument(
        None, help="Checkpoint: HF folder, .safetensors file, sharded folder, or hub id. "
        "Default: the packaged all-MiniLM-L6-v2. Several: one report per checkpoint in a "
        "subfolder of --out and --out/combined.csv (see --jobs, --ray)."
    ),
    out_dir: Path = typer.Option(Path("specbound-report"), "--out", help="Report folder (JSON, CSV, plots)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also write the JSON report here."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Also write the per-matrix table here."),
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
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG plots."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Sequence length T for families with a log T factor."),
    init: Optional[str] = typer.Option(None, "--init", help="Reference checkpoint (same architecture): distances A - A_0."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Spectra cache folder (keyed by tensor content): reruns do no linear algebra."
    ),
    approx: bool = typer.Option(
        False, "--approx", help="Matrix-free estimates of the feed-forward spectra, with error columns (giant models)."
    ),
    jobs: int = typer.Option(1, "--jobs", help="Several SOURCEs: local worker processes."),
    ray: Optional[str] = typer.Option(
        None, "--ray", help="Several SOURCEs: run on Ray; --ray alone starts a local instance, "
        "--ray=ADDRESS joins a cluster (needs specbound\\[ray])."
    ),
) -> None:
    """Spectra, per-matrix measures and bound proxies of one checkpoint."""
    if dtype not in ("float64", "float32"):
        fail(f"--dtype {dtype!r}: use float64 or float32.", 2)
    if device.split(":")[0] not in ("cpu", "cuda"):
        fail(f"--device {device!r}: use cpu or cuda.", 2)
    if ff_method not in ("auto", "gram", "svd"):
        fail(f"--ff-method {ff_method!r}: use auto, gram or svd.", 2)
    if grid_m is not None and grid_m < 1:
        fail(f"--grid-m {grid_m}: must be a positive integer.", 2)
    if l_phi is not None and not (0 < l_phi < float("inf")):
        fail(f"--l-phi {l_phi}: must be a positive finite number.", 2)
    if jobs < 1:
        fail(f"--jobs {jobs}: must be a positive integer.", 2)
    if approx and dense:
        fail("--approx and --dense exclude each other.", 2)
    sources = list(source or [])
    if len(sources) > 1:
        if json_file is not None or csv_file is not None:
            fail("--json/--csv take one checkpoint; with several SOURCEs every report is in --out/<name>/.", 2)
        _analyze_many(
            sources, out_dir, jobs=jobs, ray_address=ray, plots=plots, config=config, mapping=mapping,
            bounds=bounds, l_phi=l_phi, grid_m=grid_m, dtype=dtype, device=device, dense=dense,
            ff_method=ff_method, seq_len=seq_len, init=init, cache=cache, approx=approx,
        )
        return
    warm = _take_early_warm_start(sources[0] if sources else None, config, dtype)
    if warm is None and device == "cpu" and not (dense or approx) and cache is None and mapping is None \
            and ff_method != "svd":
        from specbound.warmstart import WarmStart  # numpy only: starts before torch is imported

        warm = WarmStart(sources[0] if sources else None, config=config, dtype=dtype).start()
    from specbound.analysis import analyze as run  # torch, pandas: ~1.5 s, while the warm start runs
    from specbound.report import write_report

    try:
        with progress_bar("analysing layers") as update:
            report = run(
                sources[0] if sources else None, config=config, mapping=mapping, bounds=bounds, l_phi=l_phi,
                grid_m=grid_m, dtype=dtype, device=device, dense=dense, ff_method=ff_method, progress=update,
                seq_len=seq_len, init=init, cache=cache, approx=approx, warm_start=warm,
            )
        with progress_bar("writing report") as update:
            written = write_report(report, out_dir, json_path=json_file, csv_path=csv_file, plots=plots)
    except SpecboundError as e:
        fail(str(e))
    finally:
        if warm is not None:  # the analysis stops it when it starts; this also waits and restores
            warm.close()
    print_summary(report, written, out_dir)


def _analyze_many(sources: list[str], out_dir: Path, *, jobs: int, ray_address: str | None, plots: bool,
                  **kwargs) -> None:
    """Several checkpoints (specbound/parallel.py): progress over checkpoints, a summary table."""
    from specbound.parallel import analyze_many

    try:
        with progress_bar(f"analysing {len(sources)} checkpoints") as update:
            table, failed = analyze_many(sources, out_dir, jobs=jobs, ray_address=ray_address, plots=plots,
                                         progress=update, **kwargs)
    except SpecboundError as e:
        fail(str(e))
    t = Table(title="Checkpoints (log10 of the main proxies; every family in combined.csv)", title_justify="left")
    main = [c for c in ("log10_spectrum_adaptive", "log10_edelman") if c in table.columns]
    cols = ["report", "model_type", "L", "N"] + (main or [c for c in table.columns if c.startswith("log10_")][:2])
    for c in cols:
        t.add_column(c.removeprefix("log10_"), justify="left" if c in ("report", "model_type") else "right")
    for _, r in table.iterrows():
        t.add_row(*[("" if pd_isna(r[c]) else f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])) for c in cols])
    out.print(t)
    if len(table):
        out.print(f"Reports written to [bold]{out_dir}[/] (one folder per checkpoint, combined.csv)", highlight=False)
    for src, msg in failed:
        line = msg if src in msg else f"{src}: {msg}"
        err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def pd_isna(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


@app.command()
def version() -> None:
    """Print the versions of specbound and its main dependencies."""
    from specbound.analysis import _versions

    for k, v in _versions().items():
        out.print(f"{k} {v}", highlight=False)


# experiment commands register here
from specbound.cli_bounds import register as _rb; _rb(app)  # noqa: E402, E702
from specbound.experiments.sparse_majority_cli import register as _r1; _r1(experiment_app)  # noqa: E402, E702
from specbound.experiments.scaling_cli import register as _r2; _r2(experiment_app)  # noqa: E402, E702
from specbound.experiments.correlation_cli import register as _r3; _r3(experiment_app)  # noqa: E402, E702


def _exit(code: object) -> None:
    """Leave the process with ``code`` without the interpreter's teardown when that is safe.

    After a command has finished (files closed, output written) the teardown only frees memory:
    with torch imported it takes ~0.5 s (module and object finalisation). When no other
    non-daemon thread is alive, run the ``atexit`` handlers, flush stdout/stderr and
    ``os._exit``; otherwise (or for a non-integer code) exit normally.
    """
    import atexit
    import os
    import threading

    if code is None:
        code = 0
    if not isinstance(code, int) or any(
        t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to write
            pass
    os._exit(code)


#: ``analyze`` options with which :func:`_early_warm_start` may start: those taking one value and
#: the plot flags. Any other option (``--dense``, ``--device``, ``--cache``, ``--mapping``,
#: ``--help`` …) leaves the warm start to the command, which knows what they mean.
_EARLY_VALUE = {"--out", "--json", "--csv", "--config", "--bounds", "--dtype", "--l-phi", "--grid-m", "--seq-len", "--init"}
_EARLY_FLAG = {"--plots", "--no-plots"}
_early: tuple[tuple, object] | None = None


def _early_key(source: str | None, config: object, dtype: str) -> tuple:
    return (source, None if config is None else Path(str(config)), dtype)


def _early_warm_start(argv: list[str]) -> None:
    """Start the warm start (``warmstart.py``) before typer parses the command line.

    typer builds a pydantic adapter for every option first (~0.2 s in which the second core would
    idle). Only for ``analyze`` with at most one SOURCE and options from :data:`_EARLY_VALUE` /
    :data:`_EARLY_FLAG`; the command then takes it only if SOURCE, ``--config`` and ``--dtype``
    are what typer parsed (:func:`_take_early_warm_start`), and closes it otherwise.
    """
    global _early
    if not argv or argv[0] != "analyze":
        return
    positional: list[str] = []
    values: dict[str, str] = {}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and a != "-":
            name, eq, val = a.partition("=")
            if name in _EARLY_FLAG and not eq:
                i += 1
                continue
            if name not in _EARLY_VALUE or (not eq and i + 1 >= len(argv)):
                return
            if not eq:
                i += 1
                val = argv[i]
            values[name] = val
        else:
            positional.append(a)
        i += 1
    if len(positional) > 1:
        return
    from specbound.warmstart import WarmStart

    source, config, dtype = (positional or [None])[0], values.get("--config"), values.get("--dtype", "float64")
    _early = (_early_key(source, config, dtype), WarmStart(source, config=config, dtype=dtype).start())


def _take_early_warm_start(source: str | None, config: object, dtype: str):  # -> WarmStart | None
    """The warm start :func:`_early_warm_start` began, if it is for this SOURCE, config and dtype."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    key, warm = early
    if key == _early_key(source, config, dtype):
        return warm
    warm.close()  # parsed differently from what the early look at the command line saw
    return None


def main() -> None:
    from specbound.parallel import normalise_ray_flag

    sys.argv[1:] = normalise_ray_flag(sys.argv[1:])  # `--ray` may be given without an address
    _early_warm_start(sys.argv[1:])
    try:
        app()
    except SpecboundError as e:  # errors raised while a command builds its inputs
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        _exit(1)
    except SystemExit as e:  # typer/click end every run (success included) with SystemExit
        _exit(e.code)


if __name__ == "__main__":
    main()
