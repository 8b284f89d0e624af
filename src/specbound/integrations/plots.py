"""Plots of a tracked run, from its two tables (``track.csv``, ``track_layers.csv``): matplotlib's
object API (:class:`matplotlib.figure.Figure`), no pyplot state, never a window.

* ``track_bounds.png``: one panel per family, its log10 value against step, with the training
  and evaluation loss on a second axis;
* ``track_sigma1.png``: per-layer σ1 against step, one panel per kind (QK and OV: the largest
  over the heads);
* ``track_p_star_zero.png``: the fraction of matrices with p* = 0 against step.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specbound.errors import InputError
from specbound.integrations.records import KINDS, LAYERS_FILE, TRACK_FILE, read_table
from specbound.writing import save_figure

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["EVAL_LOSS", "TRAIN_LOSS", "loss_columns", "plot_bounds", "plot_p_star_zero", "plot_sigma1",
           "read_track", "write_track_plots"]

#: Column names taken as the training / evaluation loss, first present wins (HF: ``loss`` and
#: ``eval_loss``; Lightning and hand-written loops: ``train_loss`` and ``val_loss``).
TRAIN_LOSS = ("loss", "train_loss", "training_loss", "train/loss")
EVAL_LOSS = ("eval_loss", "val_loss", "validation_loss", "eval/loss", "val/loss")


def loss_columns(track: "pd.DataFrame") -> tuple[str | None, str | None]:
    """The training and evaluation loss columns of ``track`` (``None`` when absent)."""

    def first(names: tuple[str, ...]) -> str | None:
        return next((c for c in names if c in track.columns and track[c].notna().any()), None)

    return first(TRAIN_LOSS), first(EVAL_LOSS)


def _families(track: "pd.DataFrame") -> list[str]:
    return [c.removeprefix("log10_") for c in track.columns if c.startswith("log10_") and track[c].notna().any()]


def _losses_on(ax: "Axes", track: "pd.DataFrame") -> None:
    train, ev = loss_columns(track)
    if train is None and ev is None:
        return
    twin = ax.twinx()
    for col, style in ((train, "-"), (ev, "--")):
        if col is not None:
            sel = track[track[col].notna()]
            twin.plot(sel["step"], sel[col], style, color="tab:gray", lw=1.0, label=col)
    twin.set_ylabel("loss", color="tab:gray")
    twin.legend(loc="center right", fontsize=7)


def plot_bounds(track: "pd.DataFrame", path: Path) -> Path:
    """``track_bounds.png``: each family's log10 value against step, losses on a second axis."""
    from matplotlib.figure import Figure

    fams = _families(track) or ["(none)"]
    cols = min(2, len(fams))
    rows = math.ceil(len(fams) / cols)
    fig = Figure(figsize=(6 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, fam in zip(axes, fams):
        col = f"log10_{fam}"
        if col in track.columns:
            ax.plot(track["step"], track[col], "o-", ms=3, color="tab:blue", label=col)
        ax.set_title(fam, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("log10 value", color="tab:blue")
        _losses_on(ax, track)
    for ax in axes[len(fams):]:
        ax.set_visible(False)
    save_figure(fig, path, dpi=110)
    return path


def plot_sigma1(layers: "pd.DataFrame", path: Path) -> Path:
    """``track_sigma1.png``: σ1 of every layer against step, one panel per kind."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    n_layers = int(layers["layer"].max()) + 1 if len(layers) else 1
    cmap = colormaps["viridis"]
    for ax, kind in zip(axes, KINDS):
        sel = layers[layers["kind"] == kind]
        for layer, g in sel.groupby("layer"):
            ax.plot(g["step"], g["sigma1"], "o-", ms=2, lw=1.0, color=cmap(int(layer) / max(n_layers - 1, 1)),
                    label=f"layer {int(layer)}")
        ax.set_title(f"σ1 of {kind}" + (" (max over heads)" if kind in ("QK", "OV") else ""), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("σ1")
        if n_layers <= 12 and len(sel):
            ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path, dpi=110)
    return path


def plot_p_star_zero(track: "pd.DataFrame", path: Path) -> Path:
    """``track_p_star_zero.png``: the fraction of matrices with p* = 0 against step (1 means B_SA
    is a function of the architecture alone, bounds.md §4)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    if "frac_p_star_zero" in track.columns:
        ax.plot(track["step"], track["frac_p_star_zero"], "o-", ms=3, color="tab:red")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of matrices with p* = 0")
    ax.set_title("adaptivity of B_SA", fontsize=10)
    _losses_on(ax, track)
    save_figure(fig, path, dpi=110)
    return path


def write_track_plots(track: "pd.DataFrame", layers: "pd.DataFrame", folder: Path) -> list[Path]:
    """The three plots (module docstring) into ``folder``; returns their paths."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        track = track.sort_values("step")
        layers = layers.sort_values(["layer", "step"])
        return [plot_bounds(track, folder / "track_bounds.png"), plot_sigma1(layers, folder / "track_sigma1.png"),
                plot_p_star_zero(track, folder / "track_p_star_zero.png")]
    except OSError as e:
        raise InputError(f"{folder}: cannot write the track plots ({e.strerror}).") from None


def read_track(folder: str | Path) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """``(track, layers)`` of a tracking folder; a clear error when it holds no track."""
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (pass the out folder of a tracked run).")
    track = read_table(folder / TRACK_FILE)
    if track is None or not len(track):
        raise InputError(f"{folder}: no {TRACK_FILE} with rows (is it the out folder of a tracked run?).")
    layers = read_table(folder / LAYERS_FILE)
    _check_columns(track, ["step"], folder / TRACK_FILE)
    if layers is None:
        layers = pd.DataFrame(columns=["step", "layer", "kind", "sigma1"])
    _check_columns(layers, ["step", "layer", "kind", "sigma1"], folder / LAYERS_FILE)
    return track, layers


def _check_columns(df: Any, needed: list[str], path: Path) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; not a specbound tracking table.")
