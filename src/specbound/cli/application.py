"""The ``specbound`` typer app: every command registered here, by name, and :func:`main`.

Command modules define plain functions (their typer options are the defaults of their
parameters) and import nothing heavy at module level, so ``specbound --help`` and every usage
error answer before torch or pandas are imported.
"""

from __future__ import annotations

import sys

import typer

from specbound.cli import analyze, attention, bounds, track, version
from specbound.cli.console import BAD_INPUT, RUNS_KEPT, error_line, interruptible
from specbound.cli.experiment import correlation, infinite_width, scaling, sparse_majority
from specbound.errors import SpecboundError

__all__ = ["app", "experiment_app", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _plain_flags() -> None:
    """Help shows a boolean flag as ``--dense``, not ``--dense <bool>`` (typer's rich help prints
    the type of every option, flags included; ``--dense true`` would then read ``true`` as SOURCE)."""
    from typer.core import TyperArgument, TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "_specbound_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: "typer.Context") -> str | None:  # type: ignore[name-defined]
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        return original(self, ctx)

    display_type_rich._specbound_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    del TyperArgument  # arguments keep their type


_plain_flags()

app = typer.Typer(
    name="specbound",
    help="Per-head spectra and generalisation-bound proxies of trained Transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)


def _version(value: bool) -> None:
    if value:
        version.version()
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the versions of specbound and its main dependencies and exit."),
) -> None:
    """Per-head spectra and generalisation-bound proxies of trained Transformers.

    Start with `specbound analyze` (the packaged MiniLM by default); it writes a report folder
    whose report.html opens in any browser.
    """
app.command("analyze")(interruptible(analyze.analyze))
app.command("attention")(interruptible(attention.attention))
app.command("version")(interruptible(version.version))
app.command("bounds")(interruptible(bounds.bounds_cmd))
app.command("compare")(interruptible(bounds.compare_cmd))
app.command("track-plot")(interruptible(track.track_plot))

experiment_app = typer.Typer(help="Experiments E1-E4 (see the README).", no_args_is_help=True,
                             context_settings=CONTEXT)
experiment_app.command("sparse-majority")(interruptible(sparse_majority.sparse_majority, RUNS_KEPT))
experiment_app.command("scaling", help=scaling.HELP)(interruptible(scaling.scaling, RUNS_KEPT))
experiment_app.command("correlation", help=correlation.HELP)(interruptible(correlation.correlation, RUNS_KEPT))
experiment_app.command("infinite-width", help=infinite_width.HELP)(interruptible(infinite_width.infinite_width, RUNS_KEPT))
app.add_typer(experiment_app, name="experiment")


def main() -> None:
    """The ``specbound`` script (``specbound.cli:main``) and ``python -m specbound.cli``.

    Exit status 0 success, 1 bad input, 2 usage error, 130 interrupted (Ctrl-C). A
    :class:`~specbound.errors.SpecboundError` or ``OSError`` a command did not catch itself is one
    ``error:`` line and exit 1, never a traceback; numpy RuntimeWarnings are not printed.
    """
    import warnings

    with warnings.catch_warnings():
        # numpy's RuntimeWarnings (overflow, invalid value…) are the library's business: it turns
        # what matters into its own errors and notes; printed here they would precede the one-line
        # error. Filtered for the CLI only, never process-wide in the library.
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            app()
        except SpecboundError as e:
            error_line(str(e))
            sys.exit(BAD_INPUT)
        except OSError as e:  # a write or read the command did not turn into its own error: still one line
            from specbound.writing import reason

            where = e.filename if e.filename is not None else "a file"
            error_line(f"{where}: {reason(e)} ({type(e).__name__}, errno {e.errno}).")
            sys.exit(BAD_INPUT)
