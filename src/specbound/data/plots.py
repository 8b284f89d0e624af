"""Plots of the data side, drawn with matplotlib's object API (``matplotlib.figure.Figure`` and
the Agg canvas; pyplot is never imported and no global setting is changed).

* ``attention_erank_heatmap.png``: layer × head heat map of mean erank(P), text and random
  tokens side by side (one colour scale);
* ``attention_depth.png``: mean erank(P) and normalised entropy against depth, per source;
* ``logit_k90_vs_weight.png``: per head, k90 of the logit field S against k90 of the weight QK;
* ``hidden_rank.png``: effective rank of the hidden states against depth (rank collapse).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from specbound.data.result import AttentionResult

__all__ = ["PLOTS"]


def _figure(w: float, h: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def heatmap(att: "AttentionResult", path: Path) -> None:
    sources = att.sources
    fig = _figure(4.2 * len(sources) + 1.0, 3.6)
    axes = fig.subplots(1, len(sources), squeeze=False)[0]
    grids = []
    for s in sources:
        h = att.heads[att.heads["source"] == s]
        g = np.full((int(h["layer"].max()) + 1, int(h["head"].max()) + 1), np.nan)
        g[h["layer"].to_numpy(), h["head"].to_numpy()] = h["P_erank_mean"].to_numpy()
        grids.append(g)
    lo, hi = float(np.nanmin(grids)), float(np.nanmax(grids))
    im = None
    for ax, s, g in zip(axes, sources, grids):
        im = ax.imshow(g, aspect="auto", origin="lower", vmin=lo, vmax=hi, cmap="viridis")
        ax.set_title(f"mean erank(P): {s}")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=list(axes), label="effective rank of P")
    fig.savefig(path, dpi=110)


def depth(att: "AttentionResult", path: Path) -> None:
    fig = _figure(9.0, 3.6)
    a1, a2 = fig.subplots(1, 2)
    for s in att.sources:
        lay = att.layers[att.layers["source"] == s].sort_values("layer")
        a1.plot(lay["layer"], lay["P_erank_mean"], marker="o", label=f"{s}")
        a2.plot(lay["layer"], lay["norm_entropy_mean"], marker="o", label=f"{s}")
    a1.set_xlabel("layer")
    a1.set_ylabel("mean erank(P) over heads")
    a2.set_xlabel("layer")
    a2.set_ylabel("mean entropy / ln(row length)")
    a1.legend()
    a2.legend()
    fig.savefig(path, dpi=110)


def k90(att: "AttentionResult", path: Path) -> None:
    fig = _figure(4.8, 4.2)
    ax = fig.subplots()
    for s in att.sources:
        h = att.heads[att.heads["source"] == s]
        ax.scatter(h["weight_qk_k90"], h["S_k90_mean"], s=14, alpha=0.8, label=s)
    top = float(np.nanmax([att.heads["weight_qk_k90"].max(), att.heads["S_k90_mean"].max(), 1.0]))
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="y = x")
    ax.set_xlabel("k90 of the weight QK[l,h]")
    ax.set_ylabel("mean k90 of the logit field S[l,h](x)")
    ax.legend()
    fig.savefig(path, dpi=110)


def hidden(att: "AttentionResult", path: Path) -> None:
    fig = _figure(5.2, 3.6)
    ax = fig.subplots()
    for s in att.sources:
        lay = att.layers[att.layers["source"] == s].sort_values("layer")
        y = list(lay["hidden_erank_mean"]) + [lay["hidden_out_erank_mean"].iloc[-1]]
        ax.plot(range(len(y)), y, marker="o", label=s)
    ax.set_xlabel("depth (0 = embeddings, last = model output)")
    ax.set_ylabel("mean erank of the hidden states X")
    ax.legend()
    fig.savefig(path, dpi=110)


PLOTS: dict[str, Callable[["AttentionResult", Path], None]] = {
    "attention_erank_heatmap.png": heatmap,
    "attention_depth.png": depth,
    "logit_k90_vs_weight.png": k90,
    "hidden_rank.png": hidden,
}
