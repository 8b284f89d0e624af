"""cli/console.py: ``fail`` (one line on stderr, the exit code given) and the progress bar."""

from __future__ import annotations

import inspect
import io

import pytest
import typer
from rich.console import Console

from specbound.cli import console


@pytest.fixture
def stderr(monkeypatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=buf, width=80, force_terminal=False))
    return buf


@pytest.mark.parametrize("code", [console.BAD_INPUT, console.USAGE])
def test_fail_prints_one_error_line_and_exits_with_the_code_given(stderr, code):
    with pytest.raises(typer.Exit) as exc:
        console.fail("--dtype 'float16': use float64 or float32.", code)
    assert exc.value.exit_code == code
    assert stderr.getvalue() == "error: --dtype 'float16': use float64 or float32.\n"


def test_fail_has_no_default_exit_code():
    # three helpers with different defaults were one source of wrong exit codes: every call says which
    assert inspect.signature(console.fail).parameters["code"].default is inspect.Parameter.empty
    assert (console.BAD_INPUT, console.USAGE) == (1, 2)


def test_progress_bar_updates(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=buf, width=100, force_terminal=True))
    seen = []
    with console.progress_bar("layers", status=True) as update:
        update(0, 4)
        update(status="T=16")
        update(2, 4, "writing")
        (task,) = _tasks(update)
        seen.append((task.completed, task.total, task.description, task.fields["status"]))
        update(3)  # the total is kept, the description falls back to the default
        (task,) = _tasks(update)
        seen.append((task.completed, task.total, task.description))
    assert seen == [(2, 4, "writing", "T=16"), (3, 4, "layers")]


def test_progress_bar_is_silent_when_stderr_is_not_a_terminal(stderr):
    with console.progress_bar("layers") as update:
        update(1, 2)  # the library's progress(done, total) signature
    assert stderr.getvalue() == ""


def _tasks(update):
    """The rich tasks behind an ``update`` callable (its closure holds the Progress)."""
    bar = next(c.cell_contents for c in update.__closure__ if type(c.cell_contents).__name__ == "Progress")
    return bar.tasks


def test_error_messages_are_plain_text(stderr):
    # rich would read "[ray]" as markup and drop it: the install hint lost its extra
    with pytest.raises(typer.Exit):
        console.fail("--ray needs Ray: pip install 'specbound[ray]'; shape [H, N, d_h].", console.BAD_INPUT)
    assert stderr.getvalue() == "error: --ray needs Ray: pip install 'specbound[ray]'; shape [H, N, d_h].\n"
