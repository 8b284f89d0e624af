"""``specbound bounds`` (the catalogue) and ``specbound compare`` (several checkpoints side by side)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from specbound.cli.console import BAD_INPUT, USAGE, err, fail, out, progress_bar
from specbound.cli.options import check_analysis_options, check_device, check_outputs
from specbound.errors import SpecboundError

if TYPE_CHECKING:  # pandas is imported where a table is built: the CLI starts without it
    import pandas as pd

__all__ = ["bounds_cmd", "catalogue", "compare_cmd", "compare_table", "plot_compare", "source_labels"]

#: The files ``compare`` writes into its --out folder.
COMPARE_FILES = ("compare.csv", "compare.png", "compare.html")
NEEDS_TEXT = {"seq_len": "seq_len (--seq-len)", "init": "init (--init)", "init?": "optional init (--init)"}


def catalogue() -> pd.DataFrame:
    """One row per registered family: name, status, needs, title, citation."""
    from specbound.bounds import available_bounds, needs_of

    rows = []
    for name, b in available_bounds().items():
        needs = [NEEDS_TEXT.get(n, n) for n in needs_of(b)]
        rows.append({
            "name": name, "status": getattr(b, "status", ""), "needs": ", ".join(needs) or "-",
            "title": getattr(b, "title", "") or "", "citation": getattr(b, "citation", ""),
        })
    import pandas as pd

    return pd.DataFrame(rows, columns=["name", "status", "needs", "title", "citation"])


def source_labels(sources: list[str]) -> list[str]:
    """Short, unique labels: the last path component, or more of the path when those collide."""
    parts = [Path(s).parts or (s,) for s in sources]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i}:{s}" for i, s in enumerate(sources)]


def compare_table(reports: list[Any], labels: list[str]) -> pd.DataFrame:
    """Rows = families (in registry order), columns ``status`` then one log10 value per checkpoint
    (empty where a family was not evaluated for that checkpoint)."""
    from specbound.bounds import available_bounds

    status: dict[str, str] = {}
    for r in reports:
        for n, b in r.bounds.items():
            status.setdefault(n, b.status)
    order = {n: i for i, n in enumerate(available_bounds())}
    names = sorted(status, key=lambda n: (order.get(n, len(order)), n))
    data: dict[str, Any] = {"family": names, "status": [status[n] for n in names]}
    for r, lab in zip(reports, labels):
        data[f"log10 {lab}"] = [r.bounds[n].log10_value if n in r.bounds else None for n in names]
    import pandas as pd

    return pd.DataFrame(data)


def plot_compare(table: pd.DataFrame, labels: list[str], path: Path) -> Path:
    """Grouped bar chart: log10 value per family (x), one bar per checkpoint."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    n_fam, n_src = len(table), len(labels)
    fig = Figure(figsize=(max(8.0, 0.9 * n_fam * max(n_src, 2) / 2 + 3), 5.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(n_src, 1)
    cmap = colormaps["tab10"]
    for j, lab in enumerate(labels):
        raw = table[f"log10 {lab}"].tolist()
        ok = [v is not None and not (isinstance(v, float) and math.isnan(v)) for v in raw]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(n_fam)]
        ax.bar([x for x, k in zip(xs, ok) if k], [v for v, k in zip(raw, ok) if k], width=width,
               color=cmap(j % 10), label=lab)
        for x, k in zip(xs, ok):  # not evaluated: say so instead of drawing a 0
            if not k:
                ax.text(x, 0.0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color=cmap(j % 10))
    ax.set_xticks(range(n_fam))
    ax.set_xticklabels([f"{f}\n({s})" for f, s in zip(table["family"], table["status"])], rotation=45,
                       ha="right", fontsize=8)
    ax.set_ylabel("log10 value")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_title("Bound families per checkpoint (log10; proxies/baselines/measures, not calibrated bounds)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return path


def bounds_cmd(
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Also write the catalogue here."),
) -> None:
    """List every bound family: name, status, what it needs, citation."""
    check_outputs(files=[(csv_file, "--csv")])
    try:
        cat = catalogue()
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    t = Table(title="Bound families (specbound analyze --bounds NAME,...)", title_justify="left",
              show_lines=True, expand=True)
    t.add_column("name", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("needs", overflow="fold", max_width=16)
    t.add_column("citation", overflow="fold", ratio=1)
    for r in cat.itertuples():
        t.add_row(r.name, r.status, r.needs, r.citation)
    from specbound.writing import is_stdout, write_csv

    (err if is_stdout(csv_file) else out).print(t)  # `--csv -`: stdout carries the CSV alone
    if csv_file is not None:

        try:
            write_csv(csv_file, cat, "--csv")
        except SpecboundError as e:
            fail(str(e), BAD_INPUT)
        if not is_stdout(csv_file):
            out.print(f"Wrote {csv_file}", highlight=False)


def compare_cmd(
    sources: list[str] = typer.Argument(..., help="Two or more checkpoints (folders, .safetensors, hub ids)."),
    out_dir: Path = typer.Option(Path("specbound-compare"), "--out", help="Folder for compare.csv, compare.png and compare.html."),
    bounds: str = typer.Option("all", "--bounds", help="Comma-separated bound families, or 'all'."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Sequence length T (log T families)."),
    init: Optional[str] = typer.Option(None, "--init", help="Reference checkpoint for distance families (same architecture as every SOURCE)."),
    l_phi: Optional[float] = typer.Option(None, "--l-phi", help="Activation Lipschitz constant (default: from each config)."),
    dtype: str = typer.Option("float64", "--dtype", help="float64 or float32."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Several checkpoints side by side: log10 values per family (printed, compare.csv), a bar
    chart (compare.png) and one self-contained page (compare.html)."""
    if len(sources) < 2:
        fail("compare needs at least two SOURCE checkpoints.", USAGE)
    check_analysis_options(dtype=dtype)  # --l-phi: checked by the analysis (exit 1)
    check_outputs(folders=[(out_dir, "--out", COMPARE_FILES)])
    check_device(device)
    from specbound.analysis import analyze  # torch, pandas: once the options are known good

    reports = []
    try:
        for src in sources:
            with progress_bar(f"analysing {src}") as update:
                reports.append(analyze(src, bounds=bounds, seq_len=seq_len, init=init, l_phi=l_phi,
                                       dtype=dtype, device=device, progress=update))
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    labels = source_labels(sources)
    table = compare_table(reports, labels)
    from specbound.report.compare import compare_page
    from specbound.writing import report_folder

    csv_path, png_path, html_path = (out_dir / n for n in COMPARE_FILES)
    try:  # the three files replace the old ones together (specbound.writing.report_folder)
        with report_folder(out_dir, option="--out") as stage:
            table.to_csv(stage.path / csv_path.name, index=False)
            png = plot_compare(table, labels, stage.path / png_path.name).read_bytes()
            (stage.path / html_path.name).write_text(compare_page(reports, labels, table, png), encoding="utf-8")
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)

    t = Table(title="log10 value per family and checkpoint", title_justify="left")
    t.add_column("family")
    t.add_column("status")
    for lab in labels:
        t.add_column(lab, justify="right")
    for _, row in table.iterrows():
        cells = [("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}")
                 for v in (row[f"log10 {lab}"] for lab in labels)]
        t.add_row(row["family"], row["status"], *cells)
    out.print(t)
    for r, lab in zip(reports, labels):
        for ne in r.not_evaluated:
            out.print(f"[yellow]not evaluated[/] {escape(lab)}: {ne['bound']}: {escape(ne['reason'])}", highlight=False)
    out.print(f"Wrote {csv_path} and {png_path}", highlight=False, soft_wrap=True)
    out.print(f"Open the comparison: [bold]{escape(str(html_path.resolve()))}[/]", highlight=False, soft_wrap=True)
