"""Plots of E2 (PNG files; matplotlib ``Figure`` objects only — no pyplot, no global state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from specbound.writing import save_figure

KIND_COLOURS = {"QK": "tab:blue", "OV": "tab:orange", "M_in": "tab:green", "M_out": "tab:red"}
PRETTY = {"spectrum_adaptive": "B_SA (spectrum-adaptive)", "edelman": "B_E (Edelman et al.)"}


def _tidy_log_axes(ax) -> None:  # type: ignore[no-untyped-def]
    """No minor ticks on log axes spanning more than 3 decades (they dominate drawing time);
    narrower axes keep them, so that they still carry labels."""
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() == "log" and lo > 0 and hi / lo > 1e3:
            axis.set_minor_locator(NullLocator())
    ax.grid(True, which="major", alpha=0.3)


def _cmap(n: int) -> list:
    from matplotlib import colormaps

    cm = colormaps["viridis"]
    return [cm(x) for x in np.linspace(0.05, 0.9, max(n, 1))]


def plot_proxy_scaling(models: pd.DataFrame, families: list[str], out: Path) -> list[Path]:
    """``proxy_vs_N.png`` and ``proxy_vs_L.png``: one panel per family, one curve per fixed L
    (resp. N), each curve divided by its first point, log y-axis (10**(log10 − first log10))."""
    written = []
    for against, fixed, fname in (("N", "L", "proxy_vs_N.png"), ("L", "N", "proxy_vs_L.png")):
        fams = [f for f in families if f"log10_{f}" in models]
        ncols = min(3, max(len(fams), 1))
        nrows = max(1, -(-len(fams) // ncols))
        fig = Figure(figsize=(4.2 * ncols, 3.6 * nrows), layout="tight")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(fams) :]:
            ax.set_visible(False)
        fixed_vals = sorted(models[fixed].unique())
        colours = _cmap(len(fixed_vals))
        for ax, fam in zip(axes, fams):
            col = f"log10_{fam}"
            for c, v in zip(colours, fixed_vals):
                g = models[models[fixed] == v].sort_values(against)
                if len(g) < 2:
                    continue
                y = 10.0 ** (g[col].to_numpy(float) - g[col].iloc[0])
                ax.plot(g[against], y, "o-", color=c, label=f"{fixed}={v}")
            ax.set_yscale("log")
            if against == "N":
                ax.set_xscale("log", base=2)
            ax.set_xlabel(against)
            ax.set_ylabel(f"proxy / proxy at smallest {against}")
            ax.set_title(PRETTY.get(fam, fam), fontsize=10)
            _tidy_log_axes(ax)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(f"Growth of the proxies with {against} at fixed {fixed} (normalised by the first point)\n"
                     "one checkpoint per point: the exponent intervals of exponents.csv are OLS intervals that "
                     "measure lack of fit, not sampling error", fontsize=9)
        path = Path(out) / fname
        save_figure(fig, path, dpi=110)
        written.append(path)
    return written


def plot_term_curves(
    curves: list[tuple[str, int, int, np.ndarray, np.ndarray, float]], path: Path, title: str
) -> Path:
    """T(p)/T(0) over P_m for every matrix of one model (one line per matrix, coloured by
    kind; a dot marks p*). ``curves``: (kind, layer, head, p_grid, log10 T, p_star)."""
    fig = Figure(figsize=(7.5, 4.5), layout="tight")
    ax = fig.subplots()
    seen = set()
    for kind, _layer, _head, p, logT, p_star in curves:
        ratio = 10.0 ** (logT - logT[0])
        lbl = kind if kind not in seen else None
        seen.add(kind)
        alpha = 0.35 if kind in ("QK", "OV") else 0.9
        ax.plot(p, ratio, color=KIND_COLOURS.get(kind, "k"), lw=0.8, alpha=alpha, label=lbl)
        j = int(np.argmin(np.abs(p - p_star)))
        ax.plot([p[j]], [ratio[j]], ".", color=KIND_COLOURS.get(kind, "k"), ms=4)
    ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("Schatten index p (grid P_m)")
    ax.set_ylabel("T(A; p) / T(A; 0)")
    ax.set_title(f"Per-matrix summand over P_m, {len(curves)} matrices: {title}", fontsize=9)
    _tidy_log_axes(ax)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)
    return Path(path)


def plot_sv_decay(spectra: dict[tuple[str, int], np.ndarray], path: Path, title: str) -> Path:
    """σ_i / σ_1 against i for a few layers, one panel per kind (QK and OV: head 0)."""
    kinds = sorted({k for k, _ in spectra}, key=lambda k: list(KIND_COLOURS).index(k) if k in KIND_COLOURS else 9)
    fig = Figure(figsize=(3.4 * len(kinds), 3.4), layout="tight")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    layers = sorted({layer for _, layer in spectra})
    colours = _cmap(len(layers))
    for ax, kind in zip(axes, kinds):
        for c, layer in zip(colours, layers):
            s = spectra.get((kind, layer))
            if s is None or len(s) == 0 or s[0] <= 0:
                continue
            s = np.sort(s)[::-1]
            s = s[s > 1e-12 * s[0]]
            ax.plot(np.arange(1, len(s) + 1), s / s[0], color=c, label=f"layer {layer}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("index i")
        ax.set_ylabel("σ_i / σ_1")
        ax.set_title(kind + (" (head 0)" if kind in ("QK", "OV") else ""), fontsize=10)
        _tidy_log_axes(ax)
        ax.legend(fontsize=7)
    fig.suptitle(f"Singular-value decay: {title}", fontsize=9)
    save_figure(fig, path, dpi=110)
    return Path(path)


def plot_norms(norms: pd.DataFrame, path: Path) -> Path:
    """Mean spectral, (2,1) and (1,1) norm per matrix kind against N, one curve per L (log-log)."""
    measures = [("mean_spectral", "spectral ‖·‖₂"), ("mean_norm_21", "‖·‖₂,₁"), ("mean_norm_11", "‖·‖₁,₁")]
    kinds = [k for k in KIND_COLOURS if k in set(norms["kind"])]
    fig = Figure(figsize=(3.2 * len(kinds), 2.8 * len(measures)), layout="tight")
    axes = fig.subplots(len(measures), len(kinds), squeeze=False)
    Ls = sorted(norms["L"].unique())
    colours = _cmap(len(Ls))
    for i, (col, label) in enumerate(measures):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            for c, L in zip(colours, Ls):
                g = norms[(norms["kind"] == kind) & (norms["L"] == L)].sort_values("N")
                y = pd.to_numeric(g[col], errors="coerce")
                if y.notna().sum() == 0:
                    continue
                ax.plot(g["N"], y, "o-", color=c, ms=3, label=f"L={L}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _tidy_log_axes(ax)
            if i == 0:
                ax.set_title(kind, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"mean {label}")
            if i == len(measures) - 1:
                ax.set_xlabel("N")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Norms of the proxy matrices against N (mean over the matrices of each kind)", fontsize=10)
    save_figure(fig, path, dpi=110)
    return Path(path)
