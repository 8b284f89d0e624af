"""Plots of experiment E3: a scatter of every measure against the gap, and the ranking chart.

Drawn on :class:`matplotlib.figure.Figure` objects (no pyplot, no backend selection);
nothing is shown. Library code: no printing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from specbound.writing import save_figure

__all__ = ["make_plots", "scatter_measure", "ranking_chart"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def scatter_measure(models: Any, column: str, score: dict[str, Any] | None, path: Path,
                    gap: str = "gap", color_by: str | None = None) -> Path:
    """``column`` (a ``log10_*`` measure) against ``gap``, one dot per model, coloured by the
    values of ``color_by`` (a hyper-parameter axis); the title carries τ and granulated τ."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.8))
    ax = fig.subplots()
    if color_by is not None and color_by in models.columns:
        values = sorted(models[color_by].unique())
        cmap = colormaps["viridis"].resampled(max(2, len(values)))
        for k, v in enumerate(values):
            sub = models[models[color_by] == v]
            ax.scatter(sub[column], sub[gap], s=16, alpha=0.75, color=cmap(k), label=f"{color_by}={v:g}")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.scatter(models[column], models[gap], s=16, alpha=0.75)
    name = column[len("log10_"):] if column.startswith("log10_") else column
    ax.set_xlabel(f"log10 {name}")
    ax.set_ylabel("generalisation gap (train acc − test acc)" if gap == "gap" else gap)
    if score is not None:
        def fmt(v: Any) -> str:
            return "n/a" if v is None or v != v else f"{v:+.2f}"

        ax.set_title(f"{name}\nτ = {fmt(score.get('kendall_tau'))}, granulated τ = "
                     f"{fmt(score.get('granulated_tau_mean'))}, robust sign error (max) = "
                     f"{fmt(score.get('robust_sign_error_max'))}",
                     fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def ranking_chart(scores: Any, path: Path, title: str = "") -> Path:
    """Horizontal bars per measure: Kendall τ-a, granulated τ mean and 1 − 2·(Dziugaite et al.'s
    mean weighted sign error over environments) (so that all three read 'higher is better',
    0 = chance), in the order of ``scores``."""
    import numpy as np

    from matplotlib.figure import Figure

    names = list(scores["measure"])
    y = np.arange(len(names))
    fig = Figure(figsize=(7.5, 0.28 * len(names) + 1.4))
    ax = fig.subplots()
    series = [("kendall_tau", "Kendall τ-a", "tab:blue"),
              ("granulated_tau_mean", "granulated τ (mean over axes)", "tab:orange")]
    h = 0.27
    for k, (col, label, color) in enumerate(series):
        ax.barh(y + (k - 1) * h, scores[col].astype(float).fillna(0.0), height=h, label=label, color=color)
    sign = 1 - 2 * scores["robust_sign_error_mean"].astype(float)
    ax.barh(y + h, sign.fillna(0.0), height=h, label="1 − 2·weighted sign error (mean over environments)",
            color="tab:green")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("score (higher = tracks the gap better; 0 = chance)")
    ax.set_title(title or "measures ranked by granulated τ", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def make_plots(models: Any, scores: Any, out: str | Path, color_by: str | None = "n_train") -> list[Path]:
    """``OUT/plots/scatter_<measure>.png`` for every measure of ``scores`` (target ``gap``) and
    ``OUT/ranking.png`` (one panel per target when ``scores`` has a ``target`` column)."""
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    files = []
    main = scores[scores["target"] == "gap"] if "target" in scores.columns else scores
    by_measure = {r["measure"]: r for r in main.to_dict("records")}
    for measure, rec in by_measure.items():
        col = f"log10_{measure}"
        if col in models.columns:
            files.append(scatter_measure(models, col, rec, plots / f"scatter_{_safe(measure)}.png",
                                         color_by=color_by))
    if "target" in scores.columns:
        for target in scores["target"].unique():
            sub = scores[scores["target"] == target]
            name = "ranking.png" if target == "gap" else f"ranking_{_safe(target)}.png"
            files.append(ranking_chart(sub, out / name, title=f"measures ranked by granulated τ with {target}"))
    else:
        files.append(ranking_chart(scores, out / "ranking.png"))
    return files
