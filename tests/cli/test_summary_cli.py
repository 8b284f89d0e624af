"""The command line around the summary: --html FILE, the page path printed last, -h, --version,
plain flags in help, ``python -m specbound``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from specbound.cli import app

runner = CliRunner()


def test_html_file_and_page_path_last(tiny_bert: Path, tmp_path: Path) -> None:
    page = tmp_path / "mail" / "page.html"
    res = runner.invoke(app, ["analyze", str(tiny_bert), "--out", str(tmp_path / "rep"), "--no-plots",
                              "--html", str(page)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert page.is_file() and (tmp_path / "rep" / "report.html").is_file()
    lines = res.stdout.strip().splitlines()
    assert lines[-1].startswith("Open the report: ") and lines[-1].endswith("report.html")
    assert f"Wrote {page}" in res.stdout
    assert "…" not in res.stdout


def test_no_plots_says_it_removed_old_plots(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    out.mkdir()
    (out / "p_star.png").write_bytes(b"old")
    res = runner.invoke(app, ["analyze", str(tiny_bert), "--out", str(out), "--no-plots", "--bounds", "param_count"])
    assert res.exit_code == 0, res.output
    assert not (out / "p_star.png").exists() and "removed the old plots p_star.png" in res.stdout


def test_short_help_version_and_plain_flags() -> None:
    res = runner.invoke(app, ["analyze", "-h"], env={"COLUMNS": "120"})
    assert res.exit_code == 0
    dense = next(ln for ln in res.stdout.splitlines() if "--dense" in ln)
    assert "<bool>" not in dense
    assert "<bool>" not in res.stdout
    assert "<path>" in res.stdout  # options with a value keep their type
    assert runner.invoke(app, ["-h"]).exit_code == 0
    v = runner.invoke(app, ["--version"])
    assert v.exit_code == 0 and v.stdout.startswith("specbound ")


def test_python_m_specbound() -> None:
    res = subprocess.run([sys.executable, "-m", "specbound", "-h"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "analyze" in res.stdout, res.stderr
