"""The summary ``specbound analyze`` prints for one checkpoint: the model line, the bound
families, one row per layer, the notes, and where the report went (``report.html`` last).

Tables never cut a header: the per-layer columns have short headers explained in a legend; a
terminal of at least :data:`WIDE` columns gets one per-layer table, a narrower one two (p* and
ranks; σ1 and α). Output that is not a terminal (a pipe, a file) is plain text: no box
characters, one line per row, columns separated by spaces, so ``grep`` finds a layer or a family.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from specbound.cli.console import out

__all__ = ["WIDE", "print_summary"]

#: Terminal width from which the per-layer table is one table.
WIDE = 110

_P_COLUMNS = ["layer", "p*QK", "p*OV", "p*in", "p*out", "rkQK", "rkOV"]
_S_COLUMNS = ["layer", "σ1QK", "σ1OV", "σ1in", "σ1out", "log10α"]


def _fmt(v: float | None, log10: float) -> str:
    return f"{v:.4g}" if v is not None else f"10^{log10:.2f}"


def _cell(col: str, v: Any) -> str:
    if col == "layer" or col.startswith("rk"):
        return str(int(v))
    if col.startswith("p*") or col == "log10α":
        return f"{v:.2f}"
    return f"{v:.3g}"


def _table(console: Console, title: str, columns: list[str], right: set[str]) -> Table:
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD if console.is_terminal else None,
              pad_edge=False, show_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=True)
    return t


def print_summary(report: Any, written: list[Path], out_dir: Path | None, *, html_file: Path | None = None,
                  removed: list[str] | None = None, console: Console | None = None,
                  before_files: Callable[[], None] | None = None) -> None:
    """Print the summary of ``report`` (a :class:`specbound.Report`) and the files ``written``;
    ``removed``: old plot files taken out of ``out_dir`` (a run without plots); ``before_files``:
    called after the tables, before the lines that name the files (e.g. the data-side summary)."""
    from specbound.report.tables import LAYER_LEGEND, layer_table, model_label, run_notes

    c = console or out
    m = report.model
    c.print(
        f"[bold]{escape(model_label(report))}[/] ({m.model_type})  L={m.n_layers}  N={m.d_model}  H={m.n_heads}  "
        f"H_kv={m.n_kv_heads}  d_h={m.d_head}  d_ff={m.d_ff}",
        highlight=False,
    )
    c.print(f"source: {escape(str(m.source))}", highlight=False, soft_wrap=True)
    for n in run_notes(report):
        c.print(f"[cyan]{escape(n)}[/]", highlight=False)
    t = _table(c, "Bound families (not calibrated bounds)",
               ["family", "value", "log10", "status"], {"value", "log10"})
    for name, b in report.bounds.items():
        t.add_row(name, _fmt(b.value, b.log10_value), f"{b.log10_value:.4f}", b.status)
    c.print(t)
    for ne in getattr(report, "not_evaluated", []):
        c.print(f"[yellow]not evaluated[/] {ne['bound']}: {escape(ne['reason'])}", highlight=False)
    note = report.adaptivity.get("note")
    if note:
        style = "yellow" if report.adaptivity.get("adaptivity") == "inactive" else "green"
        head, _, rest = note.partition(": ")
        c.print(f"[{style}]{escape(head)}[/]: {escape(rest)}", highlight=False)

    lt = layer_table(report)
    groups = [list(LAYER_LEGEND)] if c.width >= WIDE else [_P_COLUMNS, _S_COLUMNS]
    titles = (["Per layer"] if len(groups) == 1 else ["Per layer: p* and ranks", "Per layer: σ1 and α"])
    for title, cols in zip(titles, groups):
        tab = _table(c, title, cols, set(cols))
        for row in lt[cols].itertuples(index=False):
            tab.add_row(*[_cell(col, v) for col, v in zip(cols, row)])
        c.print(tab)
    legend = "; ".join(f"{k}: {v}" for k, v in LAYER_LEGEND.items() if k != "layer")
    c.print(f"[dim]{escape(legend)}[/]", highlight=False)
    for n in m.notes:
        c.print(f"[yellow]note[/] {n.code}: {escape(n.message)}", highlight=False)
    na = report.not_analysed
    if na:
        n_params = sum(_prod(x["shape"]) for x in na)
        c.print(
            f"Not analysed (outside the proxies: embeddings, biases, norms, heads): {len(na)} tensors, "
            f"{n_params:,} parameters; listed in not_analysed.csv, report.json and report.html.",
            highlight=False,
        )
    c.print(f"Analysed {len(report.matrices)} matrices in {report.elapsed_s:.2f} s.", highlight=False)
    if before_files is not None:
        before_files()
    if removed:
        c.print(f"[yellow]removed[/] the old plots {', '.join(removed)} from {escape(str(out_dir))} "
                "(--no-plots: they were another run's)", highlight=False)
    page = None
    for p in written:
        if p.name == "report.html" and out_dir is not None and p.parent == out_dir:
            page = p
        elif out_dir is None or p.parent != out_dir:
            c.print(f"Wrote {escape(str(p))}", highlight=False, soft_wrap=True)
    if out_dir is not None:
        c.print(f"Report written to [bold]{escape(str(out_dir))}[/] (report.json, CSV tables"
                + (", plots)" if any(p.suffix == ".png" for p in written) else ")"), highlight=False, soft_wrap=True)
    shown = page or html_file
    if shown is not None:
        c.print(f"Open the report: [bold]{escape(str(Path(shown).resolve()))}[/]", highlight=False, soft_wrap=True)


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
