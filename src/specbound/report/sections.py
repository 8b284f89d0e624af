"""The sections of ``report.html`` (:data:`~specbound.report.html.REPORT_SECTIONS`), and
:func:`report_page` / :func:`report_snippet` that render them.

Each section is a function of a :class:`PageContext` registered with its ``order``: 10 model
card, 20 bound families, 30 per layer, 40–60 plots, 70 per matrix, 90 not analysed / not
evaluated. A new section (data side, training) registers itself at an order of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from specbound.report.html import REPORT_SECTIONS, definition_list, esc, image, page, render_sections, table
from specbound.report.tables import LAYER_COLUMNS, LAYER_LEGEND, layer_table, model_label, run_notes

if TYPE_CHECKING:
    from specbound.analysis import Report

__all__ = ["MATRIX_PAGE_COLUMNS", "PageContext", "report_page", "report_snippet"]

#: Columns of the per-matrix table on the page (every column is in matrices.csv).
MATRIX_PAGE_COLUMNS = ["layer", "head", "kind", "rows", "cols", "rank", "spectral_norm", "frobenius", "stable_rank",
                       "effective_rank", "p_star", "log10_term", "log10_gamma", "log10_alpha", "log10_scale_margin",
                       "method", "tensors"]
_TEXT = {"kind", "method", "tensors"}


@dataclass
class PageContext:
    """What the sections read: the report and the PNG bytes of its plots (``None``: not drawn)."""

    report: "Report"
    plots: dict[str, bytes] | None = None
    extra: dict[str, object] = field(default_factory=dict)


def _label(report: "Report") -> str:
    return model_label(report)


@REPORT_SECTIONS.register("model", "Model card", order=10)
def _model_card(ctx: PageContext) -> str:
    r = ctx.report
    m = r.model
    arch = [("model type", m.model_type), ("source", m.source),
            ("L (layers)", m.n_layers), ("N (hidden size)", m.d_model), ("H (heads)", m.n_heads),
            ("H_kv (key/value heads)", m.n_kv_heads), ("d_h (head size)", m.d_head), ("d_ff", m.d_ff),
            ("activation", m.activation), ("matrices analysed", len(r.matrices)),
            ("time", f"{r.elapsed_s:.2f} s")]
    opts = [(k, v) for k, v in r.options.items() if k not in ("bounds",)]
    out = ['<div class="cards"><div><h3>Architecture</h3>' + definition_list(arch) + "</div>",
           "<div><h3>Options</h3>" + definition_list((k, _short(v)) for k, v in opts) + "</div>",
           "<div><h3>Versions</h3>" + definition_list(r.versions.items()) + "</div></div>"]
    for n in run_notes(r):
        out.append(f'<p class="note">{esc(n)}</p>')
    if m.notes:
        out.append("<h3>Assumptions of the bound this model does not meet</h3>")
        out.append(table(["code", "note"], [(n.code, n.message) for n in m.notes]))
    return "".join(out)


def _short(v: object) -> str:
    s = str(v)
    return s if len(s) <= 200 else s[:197] + "..."


def bounds_html(report: "Report") -> str:
    """The bound families table and the adaptivity note (bounds.md §4)."""
    rows = [(name, b.status, b.value, b.log10_value, b.citation) for name, b in report.bounds.items()]
    out = ['<p class="muted">Proxies, baselines and measures: not calibrated bounds. Values that overflow '
           'float64 are shown as "-"; log10 is always given.</p>',
           table(["family", "status", "value", "log10", "citation"], rows, numeric=[False, False, True, True, False])]
    a = report.adaptivity
    if a.get("note"):
        cls = "note" if a.get("adaptivity") == "inactive" else "note ok"
        out.append(f'<p class="{cls}">{esc(a["note"])}</p>')
    return "".join(out)


@REPORT_SECTIONS.register("bounds", "Bound families", order=20)
def _bounds(ctx: PageContext) -> str:
    return bounds_html(ctx.report)


def layers_html(report: "Report") -> str:
    lt = layer_table(report)
    rows = lt.itertuples(index=False)
    legend = "; ".join(f"{k}: {v}" for k, v in LAYER_LEGEND.items() if k != "layer")
    return (table(LAYER_COLUMNS, rows, numeric=[True] * len(LAYER_COLUMNS), sortable=True)
            + f'<p class="muted">{esc(legend)}.</p>')


@REPORT_SECTIONS.register("layers", "Per layer", order=30)
def _layers(ctx: PageContext) -> str:
    return layers_html(ctx.report)


def _plot_section(name: str, alt: str, text: str):  # type: ignore[no-untyped-def]
    def render(ctx: PageContext) -> str | None:
        if ctx.plots is None:
            return None
        png = ctx.plots.get(name)
        if png is None:
            return None
        return f'<p class="muted">{esc(text)}</p>' + image(png, alt)

    return render


REPORT_SECTIONS.register("p_star", "p* heat map", order=40)(_plot_section(
    "p_star.png", "p* per layer and head", "The Schatten index p* B_SA chose for every matrix (0: the rank term)."))
REPORT_SECTIONS.register("term_curves", "T(p)/T(0) curves", order=50)(_plot_section(
    "term_curves.png", "T(p)/T(0) curves", "Each matrix's term T(p) over the grid P_m relative to T(0); dots mark p*."))
REPORT_SECTIONS.register("singular_values", "Singular-value decay", order=60)(_plot_section(
    "singular_values.png", "singular-value decay", "Singular values of every matrix, coloured by layer."))


@REPORT_SECTIONS.register("plots_off", "Plots", order=65)
def _plots_off(ctx: PageContext) -> str | None:
    if ctx.plots is not None:
        return None
    return '<p class="muted">Plots not drawn (--no-plots / plots=False).</p>'


@REPORT_SECTIONS.register("matrices", "Per matrix", order=70)
def _matrices(ctx: PageContext) -> str:
    m = ctx.report.matrices
    cols = [c for c in MATRIX_PAGE_COLUMNS if c in m.columns]
    rows = m[cols].astype(object).where(m[cols].notna(), None).itertuples(index=False)
    return ('<p class="muted">Click a column header to sort. Every column of every matrix is in matrices.csv; '
            '<code>tensors</code> names the stored tensors (and head slices) each matrix was formed from.</p>'
            '<div class="scroll">'
            + table(cols, rows, sortable=True, numeric=[c not in _TEXT for c in cols], css="mono") + "</div>")


@REPORT_SECTIONS.register("skipped", "Not analysed, not evaluated", order=90)
def _skipped(ctx: PageContext) -> str:
    r = ctx.report
    out = []
    if r.not_evaluated:
        out.append("<h3>Bound families not evaluated</h3>")
        out.append(table(["family", "reason"], [(x["bound"], x["reason"]) for x in r.not_evaluated]))
    else:
        out.append("<p>Every requested bound family was evaluated.</p>")
    na = r.not_analysed
    n_params = sum(_prod(x["shape"]) for x in na)
    out.append(f"<h3>Tensors outside the proxies ({len(na)} tensors, {n_params:,} parameters)</h3>")
    out.append('<div class="scroll">' + table(["tensor", "shape", "reason"],
                                               [(x["tensor"], "×".join(map(str, x["shape"])), x.get("reason", ""))
                                                for x in na], css="mono") + "</div>")
    return "".join(out)


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def report_page(report: "Report", plots: dict[str, bytes] | None = None) -> str:
    """The whole ``report.html`` of ``report`` (``plots``: PNG bytes by file name, or ``None``)."""
    ctx = PageContext(report, plots)
    m = report.model
    sub = (f"{m.model_type} · L={m.n_layers} N={m.d_model} H={m.n_heads} · "
           f"specbound {report.versions.get('specbound', '')}")
    return page(f"specbound report — {_label(report)}", sub, render_sections(REPORT_SECTIONS, ctx),
                footer="Written by specbound analyze. Self-contained: no network resource is referenced.")


def report_snippet(report: "Report") -> str:
    """The notebook display: the model line, the bound families and the per-layer table."""
    m = report.model
    head = (f"<p><b>{esc(_label(report))}</b> ({esc(m.model_type)}, L={m.n_layers}, N={m.d_model}, "
            f"H={m.n_heads}, {len(report.matrices)} matrices)</p>")
    return ('<div class="specbound-report">' + head + bounds_html(report) + "<details><summary>Per layer</summary>"
            + layers_html(report) + "</details></div>")
