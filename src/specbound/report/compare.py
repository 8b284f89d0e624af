"""The page of ``specbound compare`` (``compare.html``): the same look as ``report.html``
(:func:`specbound.report.html.page`), its own :data:`COMPARE_SECTIONS` registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from specbound.report.html import SectionRegistry, esc, image, page, render_sections, table
from specbound.report.tables import model_label

if TYPE_CHECKING:
    import pandas as pd

    from specbound.analysis import Report

__all__ = ["COMPARE_SECTIONS", "CompareContext", "compare_page"]

#: The sections of ``compare.html``.
COMPARE_SECTIONS = SectionRegistry()


@dataclass
class CompareContext:
    """``table``: :func:`specbound.cli.bounds.compare_table` (family, status, ``log10 LABEL``...)."""

    reports: Sequence["Report"]
    labels: Sequence[str]
    table: "pd.DataFrame"
    chart: bytes | None = None


@COMPARE_SECTIONS.register("checkpoints", "Checkpoints", order=10)
def _checkpoints(ctx: CompareContext) -> str:
    rows = []
    for lab, r in zip(ctx.labels, ctx.reports):
        m = r.model
        sa = r.adaptivity.get("adaptivity", "")
        rows.append((lab, m.model_type, m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.d_ff, sa,
                     ", ".join(n.code for n in m.notes), m.source))
    return table(["label", "model type", "L", "N", "H", "H_kv", "d_ff", "adaptivity", "notes", "source"], rows,
                 numeric=[False, False, True, True, True, True, True, False, False, False])


@COMPARE_SECTIONS.register("bounds", "log10 value per family and checkpoint", order=20)
def _bounds(ctx: CompareContext) -> str:
    cols = ["family", "status"] + [f"log10 {lab}" for lab in ctx.labels]
    rows = ctx.table[cols].astype(object).where(ctx.table[cols].notna(), None).itertuples(index=False)
    return ('<p class="muted">Proxies, baselines and measures: not calibrated bounds. "-": not evaluated for '
            "that checkpoint. Click a header to sort.</p>"
            + table(cols, rows, sortable=True, numeric=[False, False] + [True] * len(ctx.labels)))


@COMPARE_SECTIONS.register("chart", "Bar chart", order=30)
def _chart(ctx: CompareContext) -> str | None:
    return None if ctx.chart is None else image(ctx.chart, "log10 value per family and checkpoint")


@COMPARE_SECTIONS.register("adaptivity", "Adaptivity (B_SA)", order=40)
def _adaptivity(ctx: CompareContext) -> str | None:
    items = [(lab, r.adaptivity.get("note")) for lab, r in zip(ctx.labels, ctx.reports) if r.adaptivity.get("note")]
    if not items:
        return None
    return "".join(f'<p class="note"><b>{esc(lab)}</b>: {esc(n)}</p>' for lab, n in items)


@COMPARE_SECTIONS.register("skipped", "Not evaluated", order=90)
def _skipped(ctx: CompareContext) -> str:
    rows: list[tuple[Any, ...]] = [(lab, ne["bound"], ne["reason"]) for lab, r in zip(ctx.labels, ctx.reports)
                                   for ne in r.not_evaluated]
    if not rows:
        return "<p>Every requested family was evaluated for every checkpoint.</p>"
    return table(["checkpoint", "family", "reason"], rows)


def compare_page(reports: Sequence["Report"], labels: Sequence[str], table_: "pd.DataFrame",
                 chart: bytes | None = None) -> str:
    """The whole ``compare.html``."""
    ctx = CompareContext(reports, labels, table_, chart)
    names = ", ".join(model_label(r) for r in reports)
    return page("specbound compare", f"{len(reports)} checkpoints: {names}", render_sections(COMPARE_SECTIONS, ctx),
                footer="Written by specbound compare. Self-contained: no network resource is referenced.")
