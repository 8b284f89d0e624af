"""Plots of E4 (PNG; ``matplotlib.figure.Figure`` only, no pyplot, no global state).

- ``kl_vs_n.png``: KL(finite ‖ limit) and KL(finite ‖ N(0, σ²_∞)) against n (identity, ReLU),
  log–log, mean ± 1 s.d. over seeds, the estimator's floor as a dashed line with its band.
- ``kl_vs_H.png``: the same against H (full width n = 256; low-rank n_H = 64) plus
  KL(limit ‖ N(0, σ²_∞)).
- ``densities.png``: seed 0's densities of finite width, limit and N(0, σ²_∞) at a few settings,
  linear and log scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from specbound.experiments.infinite_width.units import DENSITY_POINTS
from specbound.writing import save_figure

__all__ = ["write_plots"]

TITLES = {
    "n_sweep": "identity tokens, H = 2",
    "relu_n_sweep": "ReLU tokens, H = 2",
    "H_sweep": "identity tokens, n = 256",
    "lowrank_H_sweep": "low rank, n_H = 64, n = 64 H",
}
SERIES = [
    ("kl_to_limit", "KL(finite ‖ limit)", "tab:blue", "o"),
    ("kl_to_gaussian", "KL(finite ‖ N(0, σ²∞))", "tab:orange", "s"),
    ("kl_limit_to_gaussian", "KL(limit ‖ N(0, σ²∞))", "tab:green", "^"),
]


def _panel(ax: Any, d: pd.DataFrame, axis: str, series: list[str], title: str) -> None:
    d = d.sort_values(axis)
    x = d[axis].to_numpy(float)
    for col, label, colour, marker in SERIES:
        if col not in series:
            continue
        m = d[f"{col}_mean"].to_numpy(float)
        sd = np.nan_to_num(d[f"{col}_sd"].to_numpy(float))
        lo = np.minimum(sd, 0.95 * m)  # keep the bar above 0 on the log axis
        ax.errorbar(x, m, yerr=[lo, sd], fmt=marker + "-", color=colour, label=label, capsize=3, ms=4)
    fm = d["floor_mean"].to_numpy(float)
    fsd = np.nan_to_num(d["floor_sd"].to_numpy(float))
    ax.plot(x, fm, "--", color="grey", label="floor (two limit draws)")
    ax.fill_between(x, np.maximum(fm - fsd, fm * 0.05), fm + fsd, color="grey", alpha=0.2, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel("KL (nats)")
    ax.set_title(title, fontsize=10)
    ax.yaxis.set_minor_locator(NullLocator())  # minor ticks on many decades dominate drawing time
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)


def _kl_figure(summary: pd.DataFrame, exps: list[str], axis: str, series: list[str], path: Path,
               estimator: str) -> Path | None:
    present = [e for e in exps if (summary["experiment"] == e).any()]
    if not present:
        return None
    fig = Figure(figsize=(5.2 * len(present), 4.2))
    fig.subplots_adjust(left=0.1 / len(present) + 0.03, right=0.98, bottom=0.13, top=0.88, wspace=0.25)
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, e in zip(axes, present):
        _panel(ax, summary[summary["experiment"] == e], axis, series, TITLES.get(e, e))
    fig.suptitle(f"E4: KL against {axis} (mean ± 1 s.d. over seeds; estimator: {estimator})", fontsize=10)
    save_figure(fig, path, dpi=110)
    return path


def _pick(dens: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A few settings: smallest and largest n of the n sweeps, H = 1 and the largest H."""
    picks = []
    for e in ("n_sweep", "relu_n_sweep", "H_sweep"):
        items = sorted(dens.get(e, {}).values(), key=lambda r: (r["n"], r["H"]))
        if items:
            picks += [(e, items[0]), (e, items[-1])] if len(items) > 1 else [(e, items[0])]
    return picks


def _density_figure(dens: dict[str, Any], sigma2: dict[str, float], path: Path) -> Path | None:
    picks = _pick(dens)
    if not picks:
        return None
    fig = Figure(figsize=(3.3 * len(picks), 6.0))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.08, top=0.9, wspace=0.3, hspace=0.25)
    axes = fig.subplots(2, len(picks), squeeze=False)
    for j, (e, r) in enumerate(picks):
        s2 = sigma2["relu" if e == "relu_n_sweep" else "identity"]
        sd = math.sqrt(s2)
        half = DENSITY_POINTS * sd
        y = np.concatenate([-half[:0:-1], half])
        gauss = np.exp(-0.5 * y**2 / s2) / math.sqrt(2 * math.pi * s2)
        for i, scale in enumerate(("linear", "log")):
            ax = axes[i, j]
            for key, label, colour in (("finite", "finite width", "tab:blue"), ("limit", "limit", "tab:red")):
                h = np.asarray(r[key])
                ax.plot(y, np.concatenate([h[:0:-1], h]), color=colour, label=label, lw=1.3)
            ax.plot(y, gauss, "--", color="black", label="N(0, σ²∞)", lw=1.0)
            ax.set_yscale(scale)
            if scale == "log":
                ax.set_ylim(max(1e-7, gauss.min()), None)
                ax.yaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("y")
            ax.grid(True, alpha=0.3)
            if i == 0:
                tokens = "ReLU" if e == "relu_n_sweep" else "identity"
                ax.set_title(f"{tokens} tokens: n = {r['n']}, H = {r['H']}", fontsize=9)
                ax.legend(fontsize=7)
    fig.suptitle("E4: densities of y[1,1] (exact mixtures, seed 0)", fontsize=10)
    save_figure(fig, path, dpi=110)
    return path


def write_plots(out: Path, summary: pd.DataFrame, densities: dict[str, Any], sigma2: dict[str, float],
                estimator: str = "mixture") -> list[Path]:
    """Write the three figures into ``out``; return the paths written."""
    written = [
        _kl_figure(summary, ["n_sweep", "relu_n_sweep"], "n", ["kl_to_limit", "kl_to_gaussian"],
                   out / "kl_vs_n.png", estimator),
        _kl_figure(summary, ["H_sweep", "lowrank_H_sweep"], "H",
                   ["kl_to_limit", "kl_to_gaussian", "kl_limit_to_gaussian"], out / "kl_vs_H.png", estimator),
        _density_figure(densities, sigma2, out / "densities.png"),
    ]
    return [p for p in written if p is not None]
