"""``specbound track-plot DIR``: the plots of a tracked run from its tables (``track.csv``,
``track_layers.csv``, written by the Tracker or the training callbacks)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from specbound.cli.console import BAD_INPUT, fail, out
from specbound.errors import SpecboundError

__all__ = ["track_plot"]


def track_plot(
    folder: Path = typer.Argument(..., help="The out folder of a tracked run (holds track.csv)."),
    plot_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write the plots (default: FOLDER)."),
) -> None:
    """Plots of a run tracked during training: each family's log10 value with the losses, per-layer
    sigma1, and the p*-zero fraction, against step."""
    from specbound.cli.options import check_outputs

    check_outputs(folders=[(plot_dir if plot_dir is not None else folder, "--out", ())])
    from specbound.integrations.plots import read_track, write_track_plots

    try:
        track, layers = read_track(folder)
        written = write_track_plots(track, layers, plot_dir if plot_dir is not None else folder)
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    steps = track["step"]
    out.print(f"{len(track)} updates, steps {int(steps.min())}..{int(steps.max())}", highlight=False)
    for p in written:
        out.print(f"Wrote {p}", highlight=False)
