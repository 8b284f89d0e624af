"""What :func:`specbound.attention` returns: the three tables, the capacity measure
``attention_effective_rank`` (bounds.md §8), the JSON document and the output folder."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specbound.errors import InputError

__all__ = ["CAPACITY", "CITATION", "LABEL", "AttentionResult"]

CAPACITY = "attention_effective_rank"
LABEL = "this project's construction after Dhingra 2025"
CITATION = (
    "A. Dhingra. Provable Generalization in Overparameterized Neural Nets. arXiv 2508.17256 (2025) "
    "(capacity via the effective rank of attention; exact definition not available: this project's "
    "construction, bounds.md §8); O. Roy, M. Vetterli, The effective rank, EUSIPCO 2007."
)
#: The files of an attention folder (a folder in the way of one of them is an error up front).
ATTENTION_FILES = ("heads.csv", "layers.csv", "sequences.csv", "attention.json", "attention_erank_heatmap.png",
                   "attention_depth.png", "logit_k90_vs_weight.png", "hidden_rank.png")
DEFINITION = "sum over layers l and heads h of mean_x erank(P[l,h](x)) (bounds.md §8)"


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return _clean(df.astype(object).where(df.notna(), None).to_dict("records"))


@dataclass
class AttentionResult:
    """The data side of one model on one set of sequences (bounds.md §8).

    ``heads``: one row per ``(source, layer, head)``: ``n_sequences``, then
    ``{P,S}_{erank,stable_rank,rank,k90}_{mean,std,ci_low,ci_high}``,
    ``{entropy,norm_entropy}_{mean,std,ci_low,ci_high}`` and ``weight_qk_k90`` (k90 of the
    weight ``QK[ℓ,h]``). ``layers``: one row per ``(source, layer)``: ``hidden_erank_*`` (effective
    rank of the hidden state entering layer ℓ), ``hidden_out_erank_*`` (of its output) and the
    means over heads of the per-head means. ``sequences``: one row per
    ``(source, sequence, layer, head)``, the raw values (``n_tokens`` = t). ``source`` is
    ``text`` or ``random`` (the baseline of the same lengths). ``info``: model, options,
    versions, text source, counts, notes (the JSON document less the tables).
    """

    heads: pd.DataFrame
    layers: pd.DataFrame
    sequences: pd.DataFrame
    info: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def capacity(self, source: str = "text") -> float:
        """``attention_effective_rank = Σ_{ℓ,h} mean_x erank(P[ℓ,h](x))`` of one source."""
        h = self.heads[self.heads["source"] == source]
        if h.empty:
            raise InputError(f"no rows of source {source!r}; sources: {', '.join(self.sources)}.")
        return float(h["P_erank_mean"].sum())

    @property
    def attention_effective_rank(self) -> float:
        """The capacity measure on the text (bounds.md §8)."""
        return self.capacity("text")

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(self.heads["source"]))

    def capacity_dict(self) -> dict[str, Any]:
        per = {s: self.capacity(s) for s in self.sources}
        d = {
            "value": per.get("text"), "status": "measure", "label": LABEL, "citation": CITATION,
            "definition": DEFINITION, "per_source": per,
        }
        if "random" in per and per.get("text"):
            d["text_minus_random"] = per["text"] - per["random"]
            d["text_over_random"] = per["text"] / per["random"] if per["random"] else None
        return d

    def bound_result(self) -> Any:
        """The capacity as a :class:`~specbound.bounds.BoundResult` (status ``measure``) for a
        weight :class:`~specbound.analysis.Report`; its terms are the text's per-head table."""
        from specbound.bounds.base import LN10, BoundResult

        value = self.attention_effective_rank
        terms = self.heads[self.heads["source"] == "text"].drop(columns=["source"]).reset_index(drop=True)
        notes = [f"measure ({LABEL}): {DEFINITION}",
                 f"on {self.info['text']['n_sequences']} sequences, {self.info['text']['n_tokens']} tokens "
                 f"of {self.info['text']['source']['description']}"]
        if "random" in self.sources:
            notes.append(f"random-token baseline of the same lengths: {self.capacity('random'):.4f}")
        return BoundResult(name=CAPACITY, log10_value=math.log(value) / LN10, status="measure", citation=CITATION,
                           notes=notes + list(self.notes), terms=terms, params={"options": dict(self.info["options"])})

    def to_dict(self) -> dict[str, Any]:
        """The ``attention.json`` document (NaN written as ``null``)."""
        d = {"schema": "specbound.attention/1", **self.info, "capacity": {CAPACITY: self.capacity_dict()},
             "notes": list(self.notes), "elapsed_s": self.elapsed_s,
             "heads": _records(self.heads), "layers": _records(self.layers)}
        return _clean(d)

    def write(self, out_dir: str | os.PathLike, *, plots: bool = True) -> list[Path]:
        """Write ``heads.csv``, ``layers.csv``, ``sequences.csv``, ``attention.json`` and (``plots``)
        the PNG plots of :data:`specbound.data.plots.PLOTS` into ``out_dir``, all or nothing
        (:func:`specbound.writing.report_folder`: staged inside ``out_dir``). Returns the paths
        written."""
        from specbound.writing import check_folder_target, report_folder

        check_folder_target(out_dir, "--out", ATTENTION_FILES)
        with report_folder(out_dir, option="--out") as stage:
            self.fill(stage.path, plots=plots)
        return stage.written

    def fill(self, folder: Path, *, plots: bool = True) -> None:
        """Write the files of :meth:`write` into the (staging) folder ``folder``."""
        self.heads.to_csv(folder / "heads.csv", index=False)
        self.layers.to_csv(folder / "layers.csv", index=False)
        self.sequences.to_csv(folder / "sequences.csv", index=False)
        (folder / "attention.json").write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        if plots:
            from specbound.data.plots import PLOTS

            for name, fn in PLOTS.items():
                fn(self, folder / name)
