"""E1 plots: each quantity against T (log2 axis), every seed a dot, mean ± std a line.
Drawn on :class:`matplotlib.figure.Figure` objects (no pyplot, no backend selection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def make_plots(runs: Any, out: str | Path) -> list[Path]:
    """PNG plots against T (log2 x-axis) with every seed as a dot and mean ± std as a line:
    the accuracy and loss gaps, the ℓ1-norm sum, train/test accuracy (how well the runs fit,
    which the other quantities depend on), and each ``log10_<bound>`` column.
    Returns the paths written (``out/plot_<column>.png``); nothing is shown."""
    from matplotlib.figure import Figure

    out = Path(out)
    panels = [("acc_gap", "accuracy gap (train − test)"), ("loss_gap", "loss gap (test − train)"),
              ("l1_norm_sum", "ℓ1 norm sum of the kernels"),
              ("train_acc", "training accuracy (selected weights)"), ("test_acc", "test accuracy")]
    panels += [(c, f"log10 {c[6:]} proxy") for c in runs.columns if c.startswith("log10_")]
    files = []
    for col, label in panels:
        fig = Figure(figsize=(5, 3.6))
        ax = fig.subplots()
        g = runs.groupby("T")[col]
        Ts = np.array(sorted(runs["T"].unique()), dtype=float)
        ax.scatter(runs["T"], runs[col], s=14, alpha=0.5, color="tab:blue", label="runs (seeds)")
        ax.errorbar(Ts, g.mean().reindex(Ts).to_numpy(), yerr=g.std(ddof=0).reindex(Ts).to_numpy(),
                    color="tab:red", marker="o", capsize=3, label="mean ± std")
        capped = runs[runs["stopped_at_cap"].astype(bool)]
        if len(capped):
            ax.scatter(capped["T"], capped[col], s=40, facecolors="none", edgecolors="k",
                       label="stopped at epoch cap")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.set_title(f"sparse majority: {col} vs T", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"plot_{col}.png"
        fig.savefig(path, dpi=110)
        files.append(path)
    return files
