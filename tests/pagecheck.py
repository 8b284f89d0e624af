"""Checks shared by the tests of the experiment pages (OUT/report.html of E1-E4): the page
parses (the report.html test's parser), has the sections asked for, every embedded image is a
PNG that decodes and is one of the files the run wrote, and nothing refers to the network."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from report.test_html import PageParser, parse


def check_page(path: Path, sections: list[str], pngs: list[Path] | None = None) -> PageParser:
    """Parse ``path``; assert ``sections`` are there (in that order), every image decodes and
    (when ``pngs`` is given) the images are exactly those files' bytes."""
    from PIL import Image

    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    p = parse(text)
    present = [s for s in p.sections if s in sections]
    assert present == sections, (sections, p.sections)
    decoded = []
    for src in p.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        Image.open(io.BytesIO(png)).verify()
        decoded.append(png)
    if pngs is not None:
        assert sorted(decoded) == sorted(f.read_bytes() for f in pngs)
    for k, v in p.attrs:
        assert not re.search(r"https?:", v, re.IGNORECASE), (k, v[:80])
    assert not re.search(r"https?:|@import|url\(", p.style, re.IGNORECASE)
    assert not re.search(r"https?:|fetch\(|XMLHttpRequest", p.script)
    assert "<link" not in text and "<iframe" not in text
    assert "nan" not in re.sub(r"<[^>]*>", " ", text).lower().split()  # missing values are "-" / "n/a"
    return p
