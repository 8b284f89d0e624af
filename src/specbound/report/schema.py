"""The :class:`Report` an analysis returns, and the columns of its tables (README, "Output schema")."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from specbound.bounds.base import LN10, BoundResult, value_from_ln
from specbound.errors import InputError
from specbound.spectra.spectrum import ERROR_COLUMNS, KINDS, ModelSpectra
from specbound.weights.canonical import ModelInfo

if TYPE_CHECKING:
    from pathlib import Path

    from specbound.measures import MatrixTable

#: Columns of :attr:`Report.matrices`, in order (``ERROR_COLUMNS`` follow in approximate mode).
MATRIX_COLUMNS = [
    "layer", "head", "kind", "rows", "cols", "rank", "spectral_norm", "frobenius", "nuclear",
    "stable_rank", "effective_rank", "norm_21", "p_star", "term", "term_p0", "gamma", "alpha",
    "log10_term", "log10_term_p0", "log10_gamma", "log10_alpha", "log10_c_break", "log10_scale_margin", "method",
    "tensors",
]
KEY = ["layer", "head", "kind"]


def versions() -> dict[str, str]:
    """Versions of specbound and of the libraries its numbers depend on."""
    import torch

    from specbound import __version__

    return {
        "specbound": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def _nullable(values: Sequence[float | None]) -> pd.Series:
    return pd.Series(pd.array(list(values), dtype="Float64"))


def matrix_columns(table: "MatrixTable", sa_terms: pd.DataFrame, spectra: ModelSpectra) -> pd.DataFrame:
    """:attr:`Report.matrices`: the MatrixTable's measures, B_SA's per-matrix terms (``p*``, ``T``,
    ``T(0)``, ``γ*``, ``α`` in linear and log10 form, ``None`` where the linear value overflows),
    and in approximate mode the error columns; every join by ``(layer, head, kind)``."""
    df = table.frame[[c for c in MATRIX_COLUMNS if c in table.frame.columns]].copy()
    t = sa_terms[KEY + ["p_star"]].copy()
    for col in ("term", "term_p0", "gamma", "alpha"):
        ln = sa_terms[f"ln_{col}"].to_numpy()
        t[col] = _nullable([value_from_ln(float(x)) for x in ln])
        t[f"log10_{col}"] = _nullable([float(x) / LN10 if np.isfinite(x) else None for x in ln])
    for col in ("c_break", "scale_margin"):
        ln = sa_terms[f"ln_{col}"].to_numpy(dtype=np.float64)
        t[f"log10_{col}"] = _nullable([float(x) / LN10 if np.isfinite(x) else None for x in ln])
    df = df.merge(t, on=KEY, how="left", validate="one_to_one")
    columns = list(MATRIX_COLUMNS)
    if spectra.approx:
        p_star = dict(zip(zip(t["layer"], t["head"], t["kind"]), t["p_star"]))
        err = pd.DataFrame([
            {"layer": layer, "head": head, "kind": kind, **m.error_row(float(p_star[(layer, head, kind)]))}
            for layer, head, kind, m in spectra.matrices()
        ])
        df = df.merge(err, on=KEY, how="left", validate="one_to_one")
        columns += ERROR_COLUMNS
    return df[columns]


@dataclass(repr=False)
class Report:
    """What :func:`~specbound.analysis.analyze` returns.

    ``model``: the architecture (``L``, ``N``, ``H``, ``H_kv``, ``d_h``, ``d_ff``, ``source``,
    ``notes``). ``bounds[name]``: a :class:`BoundResult` (``value``, ``log10_value``, ``notes``,
    per-term table). ``matrices``: one row per analysed matrix (:data:`MATRIX_COLUMNS`).
    ``adaptivity``: whether B_SA used any spectrum (``bounds.md`` §4): ``adaptivity``
    (``active``/``inactive``), ``frac_p_star_zero``, ``median_log10_scale_margin``, ``note``.
    ``table``: the full :class:`~specbound.measures.MatrixTable` the bounds read.
    ``not_analysed``: every source tensor outside the proxies, with its shape.
    """

    model: ModelInfo
    bounds: dict[str, BoundResult]
    matrices: pd.DataFrame
    model_spectra: ModelSpectra
    options: dict[str, Any]
    not_analysed: list[dict[str, Any]] = field(default_factory=list)
    #: families not evaluated (a needed input absent, or not applicable): ``{"bound", "reason"}``
    not_evaluated: list[dict[str, str]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=versions)
    elapsed_s: float = 0.0
    table: "MatrixTable | None" = field(default=None, repr=False)
    adaptivity: dict[str, Any] = field(default_factory=dict)
    #: the data side (bounds.md §8) when ``analyze`` got texts or token ids: a
    #: :class:`specbound.data.AttentionResult` (heads, layers, sequences tables), else ``None``
    attention: Any = field(default=None, repr=False)

    def spectra(self, layer: int, head: int, kind: str) -> np.ndarray:
        """All ``min(rows, cols)`` singular values of one matrix, descending (exact zeros included)."""
        self._check_key(layer, head, kind)
        return self.model_spectra.matrix(layer, head, kind).full().double().numpy()

    def term_curve(self, layer: int, head: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """``(P_m, log10 T(A; p))`` over the grid for one matrix (``-inf`` never occurs for a
        nonzero matrix; a zero matrix's curve is all ``-inf`` and is refused)."""
        from specbound.bounds.spectrum_adaptive import ln_term_curve, p_grid
        from specbound.measures import spectrum_rank

        self._check_key(layer, head, kind)
        row = self._row(layer, head, kind)
        ms = self.model_spectra.matrix(layer, head, kind)
        grid = p_grid(int(self.options["grid_m"]))
        ln_c = (row["log10_gamma"] + row["log10_alpha"]) * LN10 + math.log(self.model.n_layers)
        curve = ln_term_curve(ms.values.double().numpy(), ms.r, ln_c, self.model.d_model, grid, spectrum_rank(ms))
        if not np.isfinite(curve).all():
            raise InputError(f"layer {layer} head {head} {kind}: the matrix is zero; T(p) = 0 on the grid.")
        return grid, curve / LN10

    def _row(self, layer: int, head: int, kind: str) -> pd.Series:
        m = self.matrices
        sel = m[(m["layer"] == layer) & (m["head"] == head) & (m["kind"] == kind)]
        return sel.iloc[0]

    def _check_key(self, layer: int, head: int, kind: str) -> None:
        if kind not in KINDS:
            raise InputError(f"kind {kind!r}: use one of {', '.join(KINDS)}.")
        if not 0 <= layer < self.model.n_layers:
            raise InputError(f"layer {layer}: the model has layers 0..{self.model.n_layers - 1}.")
        if kind in ("QK", "OV") and not 0 <= head < self.model.n_heads:
            raise InputError(f"head {head}: the model has heads 0..{self.model.n_heads - 1}.")
        if kind in ("M_in", "M_out") and head != -1:
            raise InputError(f"{kind} has no heads: pass head=-1.")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (README, "Output schema"); NA values become ``null``."""
        rows = self.matrices.astype(object).where(self.matrices.notna(), None).to_dict("records")
        doc = {
            "schema": "specbound.report/1",
            "model": self.model.to_dict(),
            "options": dict(self.options),
            "versions": dict(self.versions),
            "elapsed_s": self.elapsed_s,
            "bounds": {k: b.to_dict() for k, b in self.bounds.items()},
            "matrices": rows,
            "not_analysed": list(self.not_analysed),
            "bounds_not_evaluated": list(self.not_evaluated),
            "adaptivity": dict(self.adaptivity),
        }
        if self.attention is not None:  # only with the data side: the weight report is unchanged
            doc["attention"] = self.attention.to_dict()
        return doc

    def __repr__(self) -> str:
        """Short: the model, L/N/H, B_SA, B_E and the adaptivity note (not the dataclass dump)."""
        m = self.model
        from specbound.report.tables import model_label

        parts = [f"<specbound Report: {model_label(self)} ({m.model_type}) L={m.n_layers} N={m.d_model} "
                 f"H={m.n_heads}, {len(self.matrices)} matrices"]
        for name, short in (("spectrum_adaptive", "B_SA"), ("edelman", "B_E")):
            b = self.bounds.get(name)
            if b is not None:
                value = f"{b.value:.4g}" if b.value is not None else "overflow"
                parts.append(f"  {short} = {value} (log10 {b.log10_value:.3f}, {b.status})")
        a = self.adaptivity
        if a.get("adaptivity"):
            med = a.get("median_log10_scale_margin")
            parts.append(f"  adaptivity: {a['adaptivity']} (p* = 0 for {100 * a['frac_p_star_zero']:.0f}% of the "
                         "matrices" + (f", median scale margin {med:.2f} decades)" if med is not None else ")"))
        return "\n".join(parts) + ">"

    def _repr_html_(self) -> str:
        """The notebook display: the model line, the bound families (with the adaptivity note) and
        the per-layer table; :meth:`to_html` gives the whole page."""
        from specbound.report.sections import report_snippet

        return report_snippet(self)

    def to_html(self, path: "str | os.PathLike[str] | None" = None, *, plots: bool = True) -> str:
        """The self-contained ``report.html`` page as text; written to ``path`` too when given."""
        from specbound.report.html import write_html
        from specbound.report.sections import report_page

        pngs = None
        if plots:
            from specbound.report.plots import render_plots

            pngs = render_plots(self)
        text = report_page(self, pngs)
        if path is not None:
            write_html(text, path)
        return text

    def save(self, out_dir: "str | os.PathLike[str]", *, plots: bool = True, **paths: Any) -> list["Path"]:
        """Write the report folder (report.json, CSVs, report.html, plots): the same as
        ``specbound analyze --out OUT_DIR``; see :func:`specbound.report.write_report`."""
        from specbound.report.io import write_report

        return write_report(self, out_dir, plots=plots, **paths)

    def summary(self) -> pd.DataFrame:
        """One row per bound: value, log10 value, status."""
        return pd.DataFrame(
            [
                {"bound": k, "value": b.value, "log10_value": b.log10_value, "status": b.status}
                for k, b in self.bounds.items()
            ]
        )
