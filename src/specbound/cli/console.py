"""What every command prints through: the two consoles, :func:`fail`, :func:`error_line` and
:func:`progress_bar`.

Results go to ``out`` (stdout); errors, warnings and progress bars go to ``err`` (stderr), so a
piped stdout carries only the results. Exit codes: 0 success, 1 bad input (a file, tensor or
value the library refused), 2 usage error (an option the command line got wrong).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["BAD_INPUT", "INTERRUPTED", "NOTHING_WRITTEN", "RUNS_KEPT", "USAGE", "ProgressUpdate", "err", "error_line", "fail", "interruptible", "out",
           "print_table", "progress_bar"]

#: Exit code of an input the library refused (``SpecboundError``, a file that cannot be written).
BAD_INPUT = 1
#: Exit code of a usage error (an option value the command rejects before any work).
USAGE = 2
#: Exit code after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130

#: ``soft_wrap``: text lines are never broken by the console (a terminal wraps them itself; piped
#: output keeps every path and message on one line, as grep expects); tables still fit the width.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def print_table(con: Console, table: Any) -> None:
    """Print a results table; piped (not a terminal), at its full natural width so no cell is
    cut to ``…`` (a person reads it, grep finds the values); on a terminal, fitted to its width."""
    if con.is_terminal:
        con.print(table)
        return
    from rich.measure import Measurement

    wide = con.options.update(width=10_000, max_width=10_000)
    need = Measurement.get(con, wide, table).maximum
    if need <= con.width:
        con.print(table)
        return
    # Console.print caps ``width`` at the console's own: render with a wider twin on the same file.
    Console(file=con.file, width=need, force_terminal=False, color_system=None, soft_wrap=True).print(table)


def error_line(message: str) -> None:
    """Print ``error: message`` on stderr (one logical line; rich may wrap it). ``message`` is
    plain text: brackets in it (``specbound[ray]``, ``[H, N, d_h]``) are printed, not read as markup."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    """Print a one-line error and end the command with exit ``code`` (:data:`BAD_INPUT` or
    :data:`USAGE`). The code is always explicit: which one a check gives is part of the CLI's
    contract."""
    error_line(message)
    raise typer.Exit(code)


F = TypeVar("F", bound=Callable[..., Any])


#: What Ctrl-C leaves of a command that wrote nothing yet.
NOTHING_WRITTEN = "interrupted; nothing written"
#: What Ctrl-C leaves of an experiment: its run cache.
RUNS_KEPT = "interrupted; the runs finished so far are kept in the --out folder's cache and a rerun resumes from them"


def interruptible(command: F, message: str = NOTHING_WRITTEN) -> F:
    """Wrap a command: Ctrl-C prints one line on stderr (what was finished: the message of a
    :class:`specbound.writing.Interrupted`, else ``message``) and exits with :data:`INTERRUPTED`
    (130), never a traceback or click's "Aborted!". Every writer stages its files and commits
    them only when complete, so an interrupted write leaves nothing behind."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt as e:
            shown = getattr(e, "message", None) or message
            err.print(escape(shown), highlight=False, soft_wrap=True)
            raise typer.Exit(INTERRUPTED) from None

    return run  # type: ignore[return-value]


class ProgressUpdate(Protocol):
    """The callable :func:`progress_bar` yields. ``update(done, total)`` is also the library's
    ``progress(done, total)`` signature."""

    def __call__(self, done: int | None = None, total: int | None = None, description: str | None = None,
                 *, status: str | None = None) -> None: ...


@contextmanager
def progress_bar(description: str, *, status: bool = False) -> Iterator[ProgressUpdate]:
    """A rich progress bar on stderr (hidden when stderr is not a terminal).

    Yields ``update(done=None, total=None, description=None, *, status=None)``: arguments left
    ``None`` keep their value, except the description, which falls back to ``description``.
    ``status=True`` adds a trailing text column set by ``update(status=...)``. Lines printed on
    :data:`err` while the bar runs appear above it.
    """
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    bar = Progress(*columns, console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task(description, total=None, **({"status": ""} if status else {}))
    default = description

    def update(done: int | None = None, total: int | None = None, description: str | None = None,
               *, status: str | None = None) -> None:
        fields: dict[str, object] = {}
        if done is not None:
            fields["completed"] = done
        if total is not None:
            fields["total"] = total
        if status is not None:
            fields["status"] = status
        bar.update(task, description=description or default, **fields)

    with bar:
        yield update


def event_progress(update: "ProgressUpdate", verbose: bool) -> "Callable[[Any], None]":
    """The progress callback of the experiments that report ``ProgressEvent`` objects (``start``:
    the total; ``group``: a status line; ``run``: one more unit done, printed with ``verbose``)."""
    def on_progress(ev: Any) -> None:
        if ev.kind == "start":
            update(0, ev.total)
        elif ev.kind == "group":
            update(status=ev.message)
        elif ev.kind == "run":
            update(ev.done, status="")
            if verbose:
                err.print(f"[{ev.done}/{ev.total}] {escape(ev.message)}", highlight=False, soft_wrap=True)

    return on_progress
