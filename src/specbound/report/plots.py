"""Plots of a :class:`~specbound.analysis.Report`, saved to files (matplotlib's object API, no
pyplot state, never a window)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from specbound.spectra.spectrum import KINDS

if TYPE_CHECKING:
    from specbound.analysis import Report


def _layer_colors(n_layers: int) -> list:
    cmap = colormaps["viridis"]
    return [cmap(i / max(n_layers - 1, 1)) for i in range(n_layers)]


def plot_singular_value_decay(report: "Report", path: Path) -> Path:
    """One panel per kind: singular values (log scale) against index, a line per matrix,
    coloured by layer. Exact zeros are not drawn (log scale); each panel says how many there are."""
    ms = report.model_spectra
    colors = _layer_colors(report.model.n_layers)
    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, kind in zip(axes.ravel(), KINDS):
        zeros = 0
        for layer, head, k, m in ms.matrices():
            if k != kind:
                continue
            s = m.values.double().numpy()
            pos = s[s > 0]
            zeros += m.r - pos.size
            if pos.size:
                ax.plot(np.arange(1, pos.size + 1), pos, color=colors[layer], lw=0.8,
                        alpha=0.5 if head >= 0 else 1.0, label=f"layer {layer}" if head <= 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("index i")
        ax.set_ylabel("σ_i")
        ax.set_title(f"{kind}" + (f"  ({zeros} exact zeros not drawn)" if zeros else ""))
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Singular-value decay — {Path(report.model.source).name or report.model.source}")
    fig.savefig(path, dpi=110)
    return path


def plot_term_curves(report: "Report", path: Path) -> Path:
    """T(p)/T(0) over the Schatten grid P_m for every matrix, one panel per kind (log y)."""
    colors = _layer_colors(report.model.n_layers)
    m = report.matrices
    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, kind in zip(axes.ravel(), KINDS):
        skipped = 0
        for row in m[m["kind"] == kind].itertuples():
            if row.rank == 0:
                skipped += 1
                continue
            grid, log10_t = report.term_curve(int(row.layer), int(row.head), kind)
            ax.plot(grid, 10 ** (log10_t - log10_t[0]), color=colors[row.layer], lw=0.8, alpha=0.6)
            ax.plot(row.p_star, 10 ** (float(row.log10_term) - log10_t[0]), "o", ms=3, color=colors[row.layer])
        ax.set_yscale("log")
        ax.set_xlabel("Schatten index p")
        ax.set_ylabel("T(p) / T(0)")
        ax.set_title(kind + (f"  ({skipped} zero matrices not drawn)" if skipped else ""))
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"T(p)/T(0) on P_m (m = {report.options['grid_m']}); dots mark p*\n{adaptivity_caption(report)}")
    fig.savefig(path, dpi=110)
    return path


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


def plot_p_star_heatmap(report: "Report", path: Path) -> Path:
    """p* per layer and head for QK and OV, plus p* of M_in and M_out per layer."""
    m = report.matrices
    L, H = report.model.n_layers, report.model.n_heads
    fig = Figure(figsize=(max(8, 0.5 * H + 6), max(3, 0.35 * L + 2)), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [H, H, 2]})
    images = []
    for ax, kind in zip(axes[:2], ("QK", "OV")):
        sub = m[m["kind"] == kind]
        grid = np.zeros((L, H))
        grid[sub["layer"].to_numpy(), sub["head"].to_numpy()] = sub["p_star"].to_numpy()
        images.append(ax.imshow(grid, vmin=0, vmax=2, cmap="magma", aspect="auto"))
        ax.set_title(f"p* of {kind}[layer, head]")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    ff = np.zeros((L, 2))
    for j, kind in enumerate(("M_in", "M_out")):
        sub = m[m["kind"] == kind]
        ff[sub["layer"].to_numpy(), j] = sub["p_star"].to_numpy()
    axes[2].imshow(ff, vmin=0, vmax=2, cmap="magma", aspect="auto")
    axes[2].set_xticks([0, 1], ["M_in", "M_out"])
    axes[2].set_title("p* FF")
    fig.colorbar(images[0], ax=axes, label="p*", shrink=0.8)
    fig.suptitle(adaptivity_caption(report), fontsize=9)
    fig.savefig(path, dpi=110)
    return path


PLOTS = {
    "singular_values.png": plot_singular_value_decay,
    "term_curves.png": plot_term_curves,
    "p_star.png": plot_p_star_heatmap,
}
