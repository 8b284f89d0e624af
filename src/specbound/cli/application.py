"""The ``specbound`` typer app: every command registered here, by name, and :func:`main`.

Command modules define plain functions (their typer options are the defaults of their
parameters) and import nothing heavy at module level, so ``specbound --help`` and every usage
error answer before torch or pandas are imported.
"""

from __future__ import annotations

import sys

import typer

from specbound.cli import analyze, bounds, track, version
from specbound.cli.console import BAD_INPUT, error_line
from specbound.cli.experiment import correlation, scaling, sparse_majority
from specbound.errors import SpecboundError

__all__ = ["app", "experiment_app", "main"]

app = typer.Typer(
    name="specbound",
    help="Per-head spectra and generalisation-bound proxies of trained Transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("analyze")(analyze.analyze)
app.command("version")(version.version)
app.command("bounds")(bounds.bounds_cmd)
app.command("compare")(bounds.compare_cmd)
app.command("track-plot")(track.track_plot)

experiment_app = typer.Typer(help="Experiments E1-E3 (see the README).", no_args_is_help=True)
experiment_app.command("sparse-majority")(sparse_majority.sparse_majority)
experiment_app.command("scaling", help=scaling.HELP)(scaling.scaling)
experiment_app.command("correlation", help=correlation.HELP)(correlation.correlation)
app.add_typer(experiment_app, name="experiment")


def main() -> None:
    """The ``specbound`` script (``specbound.cli:main``) and ``python -m specbound.cli``.

    Exit status 0 success, 1 bad input, 2 usage error. A :class:`~specbound.errors.SpecboundError`
    a command did not catch itself is one ``error:`` line and exit 1, never a traceback.
    """
    try:
        app()
    except SpecboundError as e:
        error_line(str(e))
        sys.exit(BAD_INPUT)
