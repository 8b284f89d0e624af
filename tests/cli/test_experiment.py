"""cli/experiment/: the option checks of `specbound experiment ...` (exit 2 before any training,
one line) and what reaches the experiment. The experiments themselves are tested in
tests/experiments/ (through the same command line)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from specbound.cli import app
from specbound.errors import InputError

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["experiment", *args], env={"COLUMNS": "200"})


def _usage_error(res, needle: str) -> None:
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, needle", [
    (["sparse-majority", "--lengths", "16,x"], "--lengths '16,x'"),
    (["sparse-majority", "--lengths", ","], "--lengths is empty"),
    (["sparse-majority", "--n-test", "0"], "--n-test 0: must be a positive integer."),
    (["sparse-majority", "--threads", "0"], "--threads 0: must be a positive integer."),
    (["sparse-majority", "--seed", "-2"], "--seed -2"),
    (["scaling", "--family", "pictures"], "--family 'pictures'"),
    (["scaling", "--l-phi", "0"], "--l-phi 0.0"),
    (["scaling", "--threads", "0"], "--threads 0: must be a positive integer."),
    (["correlation", "--task", "vision"], "--task 'vision'"),
    (["correlation", "--jobs", "0"], "--jobs 0: must be a positive integer."),
    (["correlation", "--top", "0"], "--top 0: must be a positive integer."),
    (["correlation", "--jobs", "2", "--ray"], "exclude each other"),
    (["correlation", "--jobs", "2", "--ray-address", "auto"], "exclude each other"),
    (["correlation", "--ray-address", ""], "--ray-address is empty"),
])
def test_bad_options_are_usage_errors(tmp_path, args, needle):
    res = run(*args, "--out", str(tmp_path / "o"))
    _usage_error(res, needle)
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_a_usage_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for cmd in ("sparse-majority", "scaling"):
        _usage_error(run(cmd, "--out", str(f)), "exists and is not a folder")


@pytest.fixture
def sweep(monkeypatch):
    """The E3 sweep replaced by a recorder that stops with a library error (exit 1)."""
    import specbound.experiments.correlation as e3

    calls: list[dict] = []

    def run_sweep(cfg, out, **kw):
        calls.append({"task": cfg.task, "quick": cfg.quick, **kw})
        raise InputError("stopped by the test.")

    monkeypatch.setattr(e3, "run_sweep", run_sweep)
    return calls


@pytest.mark.parametrize("args, jobs, address", [
    ([], os.cpu_count() or 1, None),
    (["--jobs", "1"], 1, None),
    (["--ray"], os.cpu_count() or 1, "local"),
    (["--ray-address", "auto"], os.cpu_count() or 1, "auto"),
])
def test_correlation_execution_options_reach_the_sweep(sweep, tmp_path, args, jobs, address):
    res = run("correlation", "--quick", "--out", str(tmp_path / "o"), *args)
    assert res.exit_code == 1 and "error: stopped by the test." in res.output
    assert sweep == [{"task": "sparse-majority", "quick": True, "jobs": jobs, "ray_address": address,
                      "progress": sweep[0]["progress"], "plots": True}]
