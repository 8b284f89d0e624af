"""Plots of a :class:`~specbound.analysis.Report`, rendered to PNG bytes (matplotlib's object API
on an Agg canvas: no pyplot state, never a window).

:func:`render_plots` gives every plot of :data:`PLOTS` as PNG bytes (the report folder's files
and the images embedded in ``report.html`` are the same bytes); ``plot_*(report, path)`` write one.
Lines are drawn as one :class:`~matplotlib.collections.LineCollection` per panel and the layout
is fixed (no constrained layout): the three plots of MiniLM take well under a second together
(``bench/bench_plots.py``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from specbound.bounds.base import LN10
from specbound.report.tables import model_label
from specbound.spectra.spectrum import KINDS

if TYPE_CHECKING:
    from specbound.analysis import Report

__all__ = ["PLOTS", "adaptivity_caption", "model_label", "plot_p_star_heatmap", "plot_singular_value_decay",
           "plot_term_curves", "render_plot", "render_plots"]

DPI = 80
def _layer_colors(n_layers: int) -> np.ndarray:
    return colormaps["viridis"](np.linspace(0.0, 1.0, max(n_layers, 1)) if n_layers > 1 else [0.0])


def _layer_legend(ax, colors: np.ndarray, n_layers: int) -> None:  # type: ignore[no-untyped-def]
    """A legend of the layer colours (at most 12 entries: every k-th layer beyond that)."""
    step = max(1, int(np.ceil(n_layers / 12)))
    handles = [Line2D([], [], color=colors[i], lw=1.5) for i in range(0, n_layers, step)]
    labels = [f"layer {i}" for i in range(0, n_layers, step)]
    ax.legend(handles, labels, fontsize=7, ncol=2 if len(handles) > 6 else 1, loc="best", framealpha=0.8)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
#: ``10⁻³``-style labels in plain text (matplotlib's default ones go through mathtext, slowly).
_DECADES = FuncFormatter(lambda v, _pos: "10" + str(int(round(np.log10(v)))).translate(_SUPERSCRIPT) if v > 0 else "")


def _log_y(ax) -> None:  # type: ignore[no-untyped-def]
    """Log y axis with decade ticks only (minor ticks and their labels cost most of the drawing)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=8))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(_DECADES)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _panels(title: str) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.86, wspace=0.22, hspace=0.35)
    fig.suptitle(title, fontsize=10)
    return fig, axes


def singular_value_figure(report: "Report") -> Figure:
    """One panel per kind: singular values (log scale) against index, a line per matrix, coloured
    by layer. Exact zeros are not drawn (log scale); each panel says how many there are."""
    L = report.model.n_layers
    colors = _layer_colors(L)
    lines: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    line_colors: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    zeros = dict.fromkeys(KINDS, 0)
    for layer, _head, kind, m in report.model_spectra.matrices():
        s = m.values.double().numpy()
        pos = s[s > 0]
        zeros[kind] += m.r - pos.size
        if pos.size:
            lines[kind].append(np.column_stack([np.arange(1, pos.size + 1), pos]))
            line_colors[kind].append(colors[layer])
    fig, axes = _panels(f"Singular-value decay — {model_label(report)}")
    for ax, kind in zip(axes.ravel(), KINDS):
        if lines[kind]:
            ax.add_collection(LineCollection(lines[kind], colors=line_colors[kind], linewidths=0.8, alpha=0.6))
            allv = np.concatenate(lines[kind])
            ax.set_xlim(1, max(2.0, float(allv[:, 0].max())))
            ax.set_ylim(float(allv[:, 1].min()) / 1.5, float(allv[:, 1].max()) * 1.5)
        _log_y(ax)
        ax.set_xlabel("index i")
        ax.set_ylabel("σ_i")
        ax.set_title(kind + (f"  ({zeros[kind]} exact zeros not drawn)" if zeros[kind] else ""), fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    _layer_legend(axes[0, 0], colors, L)
    return fig


def term_curve_figure(report: "Report") -> Figure:
    """T(p)/T(0) over the Schatten grid P_m for every matrix, one panel per kind (log y), dots at p*."""
    from specbound.bounds.spectrum_adaptive import ln_term_curve, p_grid
    from specbound.measures import spectrum_rank

    L, N = report.model.n_layers, report.model.d_model
    colors = _layer_colors(L)
    grid = p_grid(int(report.options["grid_m"]))
    m = report.matrices
    cols = {c: m[c].tolist() for c in ("layer", "head", "kind", "rank", "p_star", "log10_gamma", "log10_alpha")}
    rows = {(la, h, k): i for i, (la, h, k) in enumerate(zip(cols["layer"], cols["head"], cols["kind"]))}
    curves: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    curve_colors: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    dots: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    skipped = dict.fromkeys(KINDS, 0)
    for layer, head, kind, ms in report.model_spectra.matrices():
        i = rows[(layer, head, kind)]
        if cols["rank"][i] == 0:
            skipped[kind] += 1
            continue
        ln_c = (cols["log10_gamma"][i] + cols["log10_alpha"][i]) * LN10 + np.log(L)
        curve = ln_term_curve(ms.values.double().numpy(), ms.r, ln_c, N, grid, spectrum_rank(ms)) / LN10
        if not np.isfinite(curve).all():
            skipped[kind] += 1
            continue
        rel = 10 ** (curve - curve[0])
        curves[kind].append(np.column_stack([grid, rel]))
        curve_colors[kind].append(colors[layer])
        p = float(cols["p_star"][i])
        dots[kind].append((p, float(np.interp(p, grid, rel))))
    title = f"T(p)/T(0) on P_m (m = {report.options['grid_m']}), dots mark p* — {model_label(report)}"
    caption = adaptivity_caption(report)
    fig, axes = _panels(title + (f"\n{caption}" if caption else ""))
    for ax, kind in zip(axes.ravel(), KINDS):
        if curves[kind]:
            ax.add_collection(LineCollection(curves[kind], colors=curve_colors[kind], linewidths=0.8, alpha=0.6))
            allv = np.concatenate(curves[kind])
            lo, hi = float(allv[:, 1].min()), float(allv[:, 1].max())
            ax.set_xlim(float(grid[0]), float(grid[-1]))
            ax.set_ylim(lo / 1.5, hi * 1.5)
            d = np.asarray(dots[kind])
            ax.scatter(d[:, 0], d[:, 1], s=9, c=curve_colors[kind], zorder=3)
        _log_y(ax)
        ax.set_xlabel("Schatten index p")
        ax.set_ylabel("T(p) / T(0)")
        ax.set_title(kind + (f"  ({skipped[kind]} zero matrices not drawn)" if skipped[kind] else ""), fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    _layer_legend(axes[0, 0], colors, L)
    return fig


def adaptivity_caption(report: "Report") -> str:
    """One line for the plots: ``adaptivity: inactive/active``, the fraction of p* = 0 and the
    median scale margin (bounds.md §4)."""
    a = report.adaptivity
    if not a:
        return ""
    med = a.get("median_log10_scale_margin")
    margin = "undefined" if med is None else f"{med:.2f} decades"
    return (f"adaptivity: {a['adaptivity']} (p* = 0 for {100 * a['frac_p_star_zero']:.0f}% of the matrices; "
            f"median scale margin {margin})")


def p_star_figure(report: "Report") -> Figure:
    """p* per layer and head for QK and OV, plus p* of M_in and M_out per layer (integer ticks)."""
    m = report.matrices
    L, H = report.model.n_layers, report.model.n_heads
    fig = Figure(figsize=(max(8.0, 0.45 * H + 6.5), max(3.2, 0.3 * L + 2.2)))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [H, H, max(2.0, H / 4)]})
    fig.subplots_adjust(left=0.07, right=0.9, bottom=0.18, top=0.78, wspace=0.25)
    layer, head, kind, p = (m[c].to_numpy() for c in ("layer", "head", "kind", "p_star"))
    image = None
    for ax, k in zip(axes[:2], ("QK", "OV")):
        sel = kind == k
        g = np.zeros((L, H))
        g[layer[sel].astype(int), head[sel].astype(int)] = p[sel].astype(float)
        image = ax.imshow(g, vmin=0, vmax=2, cmap="magma", aspect="auto", interpolation="nearest")
        ax.set_title(f"p* of {k}[layer, head]", fontsize=9)
        ax.set_xlabel("head")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ff = np.zeros((L, 2))
    for j, k in enumerate(("M_in", "M_out")):
        sel = kind == k
        ff[layer[sel].astype(int), j] = p[sel].astype(float)
    axes[2].imshow(ff, vmin=0, vmax=2, cmap="magma", aspect="auto", interpolation="nearest")
    axes[2].set_xticks([0, 1], ["in", "out"], fontsize=8)
    axes[2].set_xlabel("M")
    axes[2].set_title("p* of M", fontsize=9)
    for ax in axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("layer")
    cax = fig.add_axes((0.92, 0.18, 0.015, 0.6))
    fig.colorbar(image, cax=cax, label="p*")
    caption = adaptivity_caption(report)
    fig.suptitle(f"p* per matrix — {model_label(report)}" + (f"\n{caption}" if caption else ""), fontsize=9)
    return fig


#: file name → figure builder, in the order of the report page.
FIGURES: dict[str, Callable[["Report"], Figure]] = {
    "p_star.png": p_star_figure,
    "term_curves.png": term_curve_figure,
    "singular_values.png": singular_value_figure,
}


def render_plot(report: "Report", name: str) -> bytes:
    """The PNG bytes of plot ``name`` (a key of :data:`FIGURES`)."""
    return _png(FIGURES[name](report))


def render_plots(report: "Report") -> dict[str, bytes]:
    """Every plot as PNG bytes, by file name."""
    return {name: render_plot(report, name) for name in FIGURES}


def _writer(name: str) -> Callable[["Report", Path], Path]:
    def write(report: "Report", path: Path) -> Path:
        from specbound.writing import write_bytes

        write_bytes(path, render_plot(report, name))  # atomic, like every file specbound writes
        return Path(path)

    write.__name__ = f"write_{name.removesuffix('.png')}"
    write.__doc__ = f"Write ``{name}`` (see :func:`{FIGURES[name].__name__}`) to ``path``."
    return write


plot_singular_value_decay = _writer("singular_values.png")
plot_term_curves = _writer("term_curves.png")
plot_p_star_heatmap = _writer("p_star.png")

#: file name → ``fn(report, path)`` writing it (the report folder's plots).
PLOTS: dict[str, Callable[["Report", Path], Path]] = {name: _writer(name) for name in FIGURES}
