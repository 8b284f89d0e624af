"""The `specbound` process skips the interpreter teardown (cli._exit): exit codes and output
are those of a normal exit."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specbound.cli", *args], capture_output=True, text=True, timeout=300)


def test_exit_codes_and_flushed_output(tmp_path):
    ok = _run("version")
    assert ok.returncode == 0 and ok.stdout.startswith("specbound ")  # piped stdout was flushed
    bad_input = _run("analyze", str(tmp_path / "missing"), "--no-plots", "--out", str(tmp_path / "r"))
    assert bad_input.returncode == 1 and "no such file or folder" in bad_input.stderr
    usage = _run("analyze", "--dtype", "float16")
    assert usage.returncode == 2 and "--dtype" in usage.stderr
    unknown = _run("no-such-command")
    assert unknown.returncode == 2


def test_exit_runs_atexit_handlers(tmp_path):
    marker = tmp_path / "atexit.txt"
    code = (
        "import atexit, sys; from pathlib import Path\n"
        f"atexit.register(lambda: Path({str(marker)!r}).write_text('ran'))\n"
        "sys.argv = ['specbound', 'version']\n"
        "from specbound.cli import main; main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert marker.read_text() == "ran"
