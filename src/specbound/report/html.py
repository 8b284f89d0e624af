"""Self-contained HTML pages: ``report.html`` of ``specbound analyze``, the page of ``specbound
compare``, and the notebook display (:meth:`Report._repr_html_`).

One file, no external resource: the style sheet and the few lines of script (click a column
header of a ``table.sortable`` to sort it) are inline, plots are ``data:image/png;base64`` images.
Every page has the same look (:func:`page`).

Sections are registered, not hard-wired: a section is a :class:`Section` (an ``id``, a title, an
``order`` and ``render(context) -> html or None``) added to a :class:`SectionRegistry` with
:meth:`SectionRegistry.register`. :data:`REPORT_SECTIONS` holds those of the analysis page
(``report/sections.py``); a later part of the project (data-side measures, training curves) adds
its own section there, at its own ``order``, without touching the others. A section whose
``render`` returns ``None`` is left out (e.g. plots with ``--no-plots``).
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REPORT_SECTIONS", "Section", "SectionRegistry", "esc", "image", "page", "render_sections", "table",
           "write_html"]


def esc(x: Any) -> str:
    """``x`` as HTML text (quotes escaped: safe in attributes too)."""
    return html.escape(str(x), quote=True)


def fmt_number(v: Any, digits: int = 4) -> str:
    """A table cell: ``-`` for None/NaN, ints as they are, floats with ``digits`` significant digits."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "-"
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    return f"{f:.{digits}g}"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = False,
          numeric: Sequence[bool] | None = None, caption: str | None = None, css: str = "") -> str:
    """An HTML table; cells are escaped (pre-formatted strings are kept as text). ``sortable``:
    clicking a header sorts by that column (numbers numerically, via ``data-v``)."""
    numeric = list(numeric) if numeric is not None else [False] * len(columns)
    cls = " ".join(c for c in (css, "sortable" if sortable else "") if c)
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(
        f'<th{" class=num" if n else ""}>{esc(c)}</th>' for c, n in zip(columns, numeric)) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for v, n in zip(row, numeric):
            if n:
                key = _sort_key(v)
                cells.append(f'<td class="num" data-v="{key}">{esc(fmt_number(v))}</td>')
            else:
                cells.append(f"<td>{esc('' if v is None else v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _sort_key(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(f) else repr(f)


def image(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG inline (``data:`` URI)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def definition_list(items: Iterable[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


@dataclass(frozen=True)
class Section:
    """One section of a page: ``render(context)`` returns its HTML body, or ``None`` to leave it out."""

    id: str
    title: str
    render: Callable[[Any], str | None]
    order: int = 100


@dataclass
class SectionRegistry:
    """The sections of one kind of page, rendered in ``order`` (then registration order)."""

    sections: list[Section] = field(default_factory=list)

    def register(self, id: str, title: str, order: int = 100) -> Callable[[Callable[[Any], str | None]],
                                                                           Callable[[Any], str | None]]:
        """Decorator: ``@REPORT_SECTIONS.register("data", "Data-side measures", order=55)``.
        Registering an ``id`` again replaces that section."""
        def add(render: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
            self.sections[:] = [s for s in self.sections if s.id != id]
            self.sections.append(Section(id, title, render, order))
            return render

        return add

    def ordered(self) -> list[Section]:
        return sorted(self.sections, key=lambda s: s.order)

    def ids(self) -> list[str]:
        return [s.id for s in self.ordered()]


#: The sections of ``report.html`` (filled by ``specbound.report.sections``).
REPORT_SECTIONS = SectionRegistry()


def render_sections(registry: SectionRegistry, context: Any, *, only: Sequence[str] | None = None
                    ) -> list[tuple[str, str, str]]:
    """``[(id, title, body)]`` of the sections that render for ``context``."""
    out = []
    for s in registry.ordered():
        if only is not None and s.id not in only:
            continue
        body = s.render(context)
        if body is not None:
            out.append((s.id, s.title, body))
    return out


STYLE = """
:root{--fg:#1d2330;--mute:#5b6475;--line:#d9dee7;--band:#f4f6fa;--accent:#2f5d9e;--warn:#9a5b00;--ok:#2e7d32}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
margin:0 auto;max-width:1200px;padding:16px 24px 48px;background:#fff}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:2px solid var(--line);
padding-bottom:4px}
.sub{color:var(--mute);margin:0 0 8px}
nav{font-size:13px;margin:8px 0 0;color:var(--mute)}nav a{color:var(--accent);margin-right:12px;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--band);position:sticky;top:0}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{color:var(--accent)}
table.sortable th.asc::after{content:" ▲"}table.sortable th.desc::after{content:" ▼"}
.scroll{max-height:560px;overflow:auto;border:1px solid var(--line)}
.scroll table{margin:0}
table.mono td{white-space:nowrap}
td.mono,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
img{max-width:100%;height:auto;border:1px solid var(--line);margin:6px 0}
.note{border-left:4px solid var(--warn);background:#fff8ec;padding:6px 10px;margin:8px 0}
.note.ok{border-color:var(--ok);background:#f1f8f1}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:6px 0}dt{color:var(--mute)}dd{margin:0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:0 32px}
h3{font-size:14px;margin:12px 0 4px}.cards>div{min-width:0}dd{overflow-wrap:anywhere}
.muted{color:var(--mute)}footer{margin-top:32px;color:var(--mute);font-size:12px}
"""

#: Click a header of a ``table.sortable``: sort its rows by that column (``data-v`` numbers first).
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(t){
  t.querySelectorAll("th").forEach(function(th,i){
    th.addEventListener("click",function(){
      var asc=!th.classList.contains("asc");
      t.querySelectorAll("th").forEach(function(h){h.classList.remove("asc","desc")});
      th.classList.add(asc?"asc":"desc");
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[i],y=b.cells[i],u=x.getAttribute("data-v"),v=y.getAttribute("data-v"),r;
        if(u!==null&&v!==null&&u!==""&&v!==""){r=parseFloat(u)-parseFloat(v)}
        else{r=x.textContent.localeCompare(y.textContent,undefined,{numeric:true})}
        return asc?r:-r});
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
"""


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], *, footer: str = "") -> str:
    """A whole page: title, a table of contents, the sections (``(id, title, body html)``)."""
    nav = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t, _ in sections)
    body = "".join(f'<section id="{esc(i)}"><h2>{esc(t)}</h2>{b}</section>' for i, t, b in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p><nav>{nav}</nav></header>"
        f"<main>{body}</main><footer>{esc(footer)}</footer><script>{SCRIPT}</script></body></html>\n"
    )


def write_html(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` through :func:`specbound.writing.write_text` (atomic for a file,
    a symlink's target written, a FIFO or device written directly, ``-`` standard output)."""
    from specbound.writing import write_text

    write_text(path, text)
    return Path(path)
