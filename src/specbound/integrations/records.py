"""What one tracking update records, read from the :class:`~specbound.report.schema.Report` of
``analyze`` (nothing recomputed here), and the two tables it goes to.

``track.csv`` (:data:`TRACK_FILE`): one row per update. Columns, in order: ``step``, ``epoch``,
the trainer's metrics as it names them (``loss``, ``eval_loss``, ``learning_rate``, … the
latest values it reported), then

========================================= ==================================================
``log10_<family>``                         log10 value of every evaluated family
``frac_p_star_zero``                       fraction of all matrices whose p* is 0 (bounds.md §4)
``median_log10_scale_margin``              median over matrices of ``Report.matrices``'
                                           ``log10_scale_margin`` column (bounds.md §4)
``mean_stable_rank_<kind>``                mean stable rank of the QK, OV, M_in, M_out matrices
``mean_effective_rank_<kind>``             mean effective rank (Roy & Vetterli) per kind
``update_s``                               wall time of the update (spectra, bounds, tables)
``blocks_computed``, ``blocks_reused``     blocks (4 per layer) computed / taken from memory
========================================= ==================================================

``track_layers.csv`` (:data:`LAYERS_FILE`): one row per (update, layer, kind): ``step``,
``epoch``, ``layer``, ``kind``, ``sigma1`` (σ1, the largest over the heads for QK and OV),
``mean_stable_rank``, ``mean_effective_rank``, ``frac_p_star_zero``.

Both are rewritten after every update through a temporary file in the same folder and a
rename (:mod:`specbound.writing`), so a reader (or a killed run) never sees a half-written table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specbound.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from specbound.report.schema import Report

__all__ = [
    "KINDS", "LAYERS_FILE", "LAYER_COLUMNS", "MARGIN_COLUMN", "OWN_PREFIXES", "SCALAR_PREFIX", "TRACK_FILE",
    "layer_rows", "read_table", "scalars_of", "summary_row", "track_columns", "write_table",
]

TRACK_FILE = "track.csv"
LAYERS_FILE = "track_layers.csv"
KINDS = ("QK", "OV", "M_in", "M_out")
#: The per-matrix column of ``Report.matrices`` whose median is ``median_log10_scale_margin``: the
#: margin ``log10_scale − log10_c_break`` of bounds.md §4 ("When adaptivity is inactive"); the median
#: is ``Report.adaptivity["median_log10_scale_margin"]`` (over the matrices where it is defined).
MARGIN_COLUMN = "log10_scale_margin"
LAYER_COLUMNS = ["step", "epoch", "layer", "kind", "sigma1", "mean_stable_rank", "mean_effective_rank",
                 "frac_p_star_zero"]
#: Prefix of the scalars handed to the trainer's loggers (TensorBoard groups them under it).
SCALAR_PREFIX = "specbound/"


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _columns(report: "Report") -> dict[str, list[Any]]:
    """The columns an update reads, as plain lists (pandas group-bys cost more than the rest of
    the bookkeeping on a small model)."""
    m = report.matrices
    cols = {c: m[c].tolist() for c in ("layer", "kind", "spectral_norm", "stable_rank", "effective_rank")}
    cols["p0"] = [float(p) == 0.0 for p in m["p_star"].tolist()]
    return cols


def _mean(v: list[float]) -> float:
    return float(sum(v) / len(v)) if v else math.nan


def summary_row(report: "Report") -> dict[str, float]:
    """The bound values and the whole-model figures of one update (module docstring)."""
    c = _columns(report)
    row: dict[str, float] = {f"log10_{name}": float(b.log10_value) for name, b in report.bounds.items()}
    row["frac_p_star_zero"] = _mean([float(x) for x in c["p0"]])
    if report.adaptivity.get("median_" + MARGIN_COLUMN) is not None:
        row["median_" + MARGIN_COLUMN] = float(report.adaptivity["median_" + MARGIN_COLUMN])
    for stat in ("stable_rank", "effective_rank"):
        for kind in KINDS:
            row[f"mean_{stat}_{kind}"] = _mean([_float(v) for v, k in zip(c[stat], c["kind"]) if k == kind])
    return row


def layer_rows(report: "Report") -> list[dict[str, Any]]:
    """One row per (layer, kind) of the update (without ``step``/``epoch``): σ1 (largest over the
    heads), mean stable and effective rank, fraction of p* = 0."""
    c = _columns(report)
    groups: dict[tuple[int, str], list[int]] = {}
    for i, key in enumerate(zip(c["layer"], c["kind"])):
        groups.setdefault((int(key[0]), str(key[1])), []).append(i)
    order = {k: i for i, k in enumerate(KINDS)}
    rows = [
        {"layer": layer, "kind": kind, "sigma1": max(_float(c["spectral_norm"][i]) for i in idx),
         "mean_stable_rank": _mean([_float(c["stable_rank"][i]) for i in idx]),
         "mean_effective_rank": _mean([_float(c["effective_rank"][i]) for i in idx]),
         "frac_p_star_zero": _mean([float(c["p0"][i]) for i in idx])}
        for (layer, kind), idx in groups.items()
    ]
    rows.sort(key=lambda r: (r["layer"], order.get(r["kind"], len(order))))
    return rows


#: Prefixes of the columns an update computes (the others, past step and epoch, are the trainer's).
OWN_PREFIXES = ("log10_", "frac_p_star_zero", "median_", "mean_stable_rank_", "mean_effective_rank_",
                "update_s", "blocks_")


def track_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns of ``track.csv``: ``step``, ``epoch``, the trainer's metrics, then the update's
    own figures, each group in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))

    def group(c: str) -> int:
        return 0 if c in ("step", "epoch") else 2 if c.startswith(OWN_PREFIXES) else 1

    return sorted(seen, key=group)


def scalars_of(row: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, float]:
    """The scalars for the trainer's loggers: the summary figures and every layer's σ1, named
    ``specbound/<column>`` and ``specbound/sigma1_<kind>_layer<ℓ>``."""
    skip = {"step", "epoch", "update_s", "blocks_computed", "blocks_reused"}
    out = {SCALAR_PREFIX + k: float(v) for k, v in row.items() if k not in skip and k.startswith(OWN_PREFIXES)}
    for r in layers:
        out[f"{SCALAR_PREFIX}sigma1_{r['kind']}_layer{r['layer']}"] = float(r["sigma1"])
    return out


def write_table(rows: list[dict[str, Any]], path: Path, columns: list[str] | None = None) -> None:
    """Write ``rows`` as CSV at ``path`` atomically (:func:`specbound.writing.write_text`: a
    temporary file in the same folder, fsync, rename)."""
    import pandas as pd

    from specbound.writing import WriteError, write_text

    df = pd.DataFrame(rows, columns=columns) if columns is not None else pd.DataFrame(rows)
    try:
        write_text(path, df.to_csv(index=False))
    except WriteError as e:
        raise InputError(f"cannot write the tracking table: {e}") from None


def read_table(path: Path) -> "pd.DataFrame | None":
    """A table written by :func:`write_table` (pandas reads floats back exactly), ``None`` if absent."""
    import pandas as pd

    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the tracking table ({e}).") from None
