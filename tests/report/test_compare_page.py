"""``specbound compare`` writes compare.html: one self-contained page in the report's look."""

from __future__ import annotations

import base64
from pathlib import Path

from builders import write_bert
from typer.testing import CliRunner

from specbound.cli import app

from .test_html import parse


def test_compare_writes_its_page(tmp_path: Path) -> None:
    a = write_bert(tmp_path / "a", seed=0)
    b = write_bert(tmp_path / "b", seed=1)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(out), "--bounds", "spectrum_adaptive,edelman"])
    assert res.exit_code == 0, res.output
    text = (out / "compare.html").read_text(encoding="utf-8")
    p = parse(text)
    assert {"checkpoints", "bounds", "chart", "skipped"} <= set(p.sections)
    assert len(p.images) == 1
    assert base64.b64decode(p.images[0].split(",", 1)[1]) == (out / "compare.png").read_bytes()
    assert "http:" not in text and "https:" not in text
    assert {"log10 a", "log10 b"} <= set(p.headers)
    assert res.stdout.strip().splitlines()[-1].endswith("compare.html")
