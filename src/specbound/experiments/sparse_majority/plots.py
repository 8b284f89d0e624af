"""E1 plots: each quantity against T (log2 axis), every seed a dot, mean ± std a line, the
OLS trend over all runs and over fitted runs only, and the number of capped runs per T.
Drawn on :class:`matplotlib.figure.Figure` objects (no pyplot, no backend selection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from specbound.writing import save_figure


def make_plots(runs: Any, out: str | Path) -> list[Path]:
    """PNG plots against T (log2 x-axis) with every seed as a dot, mean ± std as a line, runs
    stopped at the epoch cap circled, the OLS trend in log2 T over all runs (dashed) and over
    the fitted runs only (dotted), and the capped runs per T in the title: the accuracy and
    loss gaps, Trauger & Tewari's ℓ1 sum over every trainable variable and the weights-only
    sum, train/test accuracy (how well the runs fit, which the other quantities depend on),
    and each ``log10_<bound>`` column (B_SA's with its adaptivity in the title).
    Returns the paths written (``out/plot_<column>.png``); nothing is shown."""
    from matplotlib.figure import Figure

    from specbound.experiments.stats import fit_slope

    out = Path(out)
    panels = [("acc_gap", "accuracy gap (train − test)"), ("loss_gap", "loss gap (test − train)"),
              ("l1_sum_all_variables", "ℓ1 sum, every trainable variable (Trauger & Tewari)"),
              ("l1_sum_weights_only", "ℓ1 sum of the six weight matrices only"),
              ("train_acc", "training accuracy (selected weights)"), ("test_acc", "test accuracy")]
    panels += [(c, f"log10 {c[6:]} proxy") for c in runs.columns if c.startswith("log10_")]
    capped_all = runs["stopped_at_cap"].astype(bool).to_numpy()
    n_per_T = runs.groupby("T").size()
    cap_per_T = runs.groupby("T")["stopped_at_cap"].apply(lambda c: int(c.astype(bool).sum()))
    cap_text = "capped/runs per T: " + ", ".join(f"{int(T)}:{int(cap_per_T.loc[T])}/{int(n_per_T.loc[T])}"
                                                   for T in n_per_T.index)
    x_log = np.log2(runs["T"].to_numpy(dtype=float))
    files = []
    for col, label in panels:
        if col not in runs.columns:
            continue
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
        yv = runs[col].to_numpy(dtype=float)
        for keep, style, name in ((np.ones_like(capped_all), "--", "trend, all runs"),
                                  (~capped_all, ":", "trend, fitted runs only")):
            fit = fit_slope(x_log[keep], yv[keep])
            if fit.slope is not None and fit.intercept is not None:
                xs = np.log2(Ts)
                ax.plot(Ts, fit.intercept + fit.slope * xs, style, color="tab:gray",
                        label=f"{name}: {fit.slope:+.3g}/doubling (n={fit.n})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        title = f"sparse majority: {col} vs T\n{cap_text}"
        if col == "log10_spectrum_adaptive" and "frac_p_star_zero" in runs.columns:
            fr = runs["frac_p_star_zero"].astype(float)
            mg = runs["median_log10_scale_margin"].astype(float)
            title += (f"\nadaptivity: frac_p_star_zero {fr.min():.2f}–{fr.max():.2f}, "
                      f"median scale margin {mg.median():.2f} decades")
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"plot_{col}.png"
        save_figure(fig, path, dpi=110)
        files.append(path)
    return files
