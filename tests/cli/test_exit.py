"""The `specbound` process: exit status 0 / 1 / 2 and complete output on a pipe, through a real
subprocess (``python -m specbound.cli``, the same ``main`` as the installed script)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from specbound.errors import InputError


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specbound.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_exit_codes_and_piped_output(tmp_path):
    ok = _run("version")
    assert ok.returncode == 0 and ok.stdout.startswith("specbound ") and ok.stderr == ""
    assert {"torch", "numpy"} <= {line.split()[0] for line in ok.stdout.splitlines()}
    bad_input = _run("analyze", str(tmp_path / "missing"), "--no-plots", "--out", str(tmp_path / "r"))
    assert bad_input.returncode == 1 and "no such file or folder" in bad_input.stderr and bad_input.stdout == ""
    assert not (tmp_path / "r").exists()
    usage = _run("analyze", "--dtype", "float16")
    assert usage.returncode == 2 and "--dtype" in usage.stderr and usage.stdout == ""
    assert _run("no-such-command").returncode == 2
    assert _run("analyze", "--no-such-option").returncode == 2


def test_piped_table_is_complete(tmp_path):
    res = _run("bounds", "--csv", str(tmp_path / "cat.csv"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith(f"Wrote {tmp_path / 'cat.csv'}")  # the last line made it through the pipe
    assert "spectrum_adaptive" in res.stdout and "param_count" in res.stdout


def test_main_turns_an_uncaught_library_error_into_exit_1(monkeypatch, capsys):
    import specbound.cli.application as application

    def app() -> None:
        raise InputError("model.safetensors: truncated.")

    monkeypatch.setattr(application, "app", app)
    with pytest.raises(SystemExit) as exc:
        application.main()
    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == "error: model.safetensors: truncated."


def test_reader_gone_is_a_quiet_exit_1():
    """`specbound bounds | head -0`: no traceback, no second error while the interpreter exits."""
    p = subprocess.Popen([sys.executable, "-m", "specbound.cli", "bounds"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # before the command has printed anything
    stderr = p.stderr.read().decode()
    assert p.wait(timeout=300) == 1
    assert stderr == ""
