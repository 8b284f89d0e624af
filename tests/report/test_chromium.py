"""report.html in headless Chromium (skipped when ``chromium`` is not on PATH): the screenshot
is not blank and the page logs no console error."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from specbound.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr",
         "--v=0", "--window-size=1280,2400"]


def render(page: Path, png: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                               page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    return proc.stderr


def console_errors(log: str) -> list[str]:
    """Chromium logs a page's console messages as ``...:CONSOLE(line)] "message"``."""
    return [ln for ln in log.splitlines() if ":CONSOLE" in ln and ("ERROR" in ln or "Uncaught" in ln
                                                                    or "Error" in ln)]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian package chromium)")
def test_report_renders_in_chromium(minilm_report, tmp_path: Path) -> None:
    from PIL import Image

    write_report(minilm_report, tmp_path)
    png = tmp_path / "shot.png"
    log = render(tmp_path / "report.html", png)
    assert png.is_file(), log[-2000:]
    im = Image.open(png).convert("RGB")
    colours = im.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "blank screenshot"
    white = max(colours)[0] / (im.size[0] * im.size[1])
    assert white < 0.97, "almost all one colour"
    assert not console_errors(log), console_errors(log)
    # the check itself sees a console error
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction()</script></body></html>")
    assert console_errors(render(bad, tmp_path / "bad.png"))
