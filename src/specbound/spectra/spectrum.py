"""What the spectra loop produces: one :class:`MatrixSpectrum` per matrix, grouped by layer.

:class:`MatrixSpectrum` is the one interface of exact and estimated spectra: callers read
``values``, ``norm_21``, ``method``, ``approximate`` and :meth:`~MatrixSpectrum.error_row`
and never branch on the type (:class:`~specbound.spectra.approx.ApproxSpectrum` is the
estimated kind).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from specbound.weights.canonical import ModelInfo

#: The kinds of analysed matrix, in table order.
KINDS = ("QK", "OV", "M_in", "M_out")

#: Error columns of ``Report.matrices`` in approximate mode (absolute errors; 0 for exact spectra).
ERROR_COLUMNS = ["spectral_norm_err", "frobenius_err", "nuclear_err", "log10_term_err"]


@dataclass
class MatrixSpectrum:
    """Singular values of one matrix.

    ``values``: the computed singular values, descending (length ``k ≤ r``); ``r`` = min(rows,
    cols); the ``r − k`` singular values not listed are exactly zero. ``norm_21`` is
    ``Σ_j ‖A[:, j]‖₂`` in row-vector orientation. ``method`` records how the values were obtained.
    """

    values: torch.Tensor
    rows: int
    cols: int
    norm_21: float
    method: str

    #: ``True`` for estimates (``--approx``)
    approximate: ClassVar[bool] = False

    @property
    def r(self) -> int:
        return min(self.rows, self.cols)

    def full(self) -> torch.Tensor:
        """All ``r`` singular values, the exact zeros included."""
        pad = self.r - self.values.numel()
        if pad <= 0:
            return self.values
        return torch.cat([self.values, self.values.new_zeros(pad)])

    def error_row(self, p_star: float) -> dict[str, float]:
        """The :data:`ERROR_COLUMNS` of this matrix (all 0 for an exact spectrum)."""
        return dict.fromkeys(ERROR_COLUMNS, 0.0)

    def payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
        """Tensors and metadata beyond the values that a cache entry must keep (none here)."""
        return {}, None


@dataclass
class LinkNorms:
    """What the chain families need of one link of this project's layer chain (``bounds.md`` §6)
    that is not a per-head matrix: ``VO[ℓ] = W_V W_O`` (all heads, ``rows × cols``). Not a
    spectrum: only ``σ_1`` (``spectral_norm``), ``‖·‖_F`` (``frobenius``; its square may exceed
    the float range when the norm does not, so it is kept as the norm) and ``‖·‖_{2,1}``."""

    rows: int
    cols: int
    spectral_norm: float
    frobenius: float
    norm_21: float
    method: str

    def payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata of a cache entry."""
        t = torch.tensor([self.spectral_norm, self.frobenius, self.norm_21], dtype=torch.float64)
        return {"link": t}, {"rows": self.rows, "cols": self.cols, "method": self.method}

    @classmethod
    def from_payload(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "LinkNorms | None":
        """The link of a cache entry, ``None`` when it does not hold one."""
        t = tensors.get("link")
        if t is None or tuple(t.shape) != (3,) or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            return None
        return cls(int(meta["rows"]), int(meta["cols"]), float(t[0]), float(t[1]), float(t[2]), str(meta["method"]))


@dataclass
class WeightNorms:
    """Entrywise norms ``‖W‖_{1,1} = Σ_ij |W_ij|`` of one layer's weights; O(params), no products.

    ``heads[k]``: per head of factor ``k`` (``W_Q``, ``W_O``: ``H`` values; ``W_K``, ``W_V``:
    ``H_kv`` values, one per key/value head as stored). ``totals[k]``: the whole weight
    (``W_Q``, ``W_K``, ``W_V``, ``W_O``, ``M_in``, ``M_out``; each parameter counted once).
    ``vectors[name] = (label, ‖v‖_1)`` for every 1-D tensor of ``LayerWeights.extras``, labelled
    ``bias``, ``norm`` or ``other`` (:func:`specbound.weights.canonical.vector_label`). ``params``: parameter count per weight.
    """

    heads: dict[str, list[float]]
    totals: dict[str, float]
    vectors: dict[str, tuple[str, float]]
    params: dict[str, int]


@dataclass
class LayerSpectra:
    """Spectra of one layer: ``qk[h]``, ``ov[h]`` per query head, ``m_in``, ``m_out``."""

    layer: int
    qk: list[MatrixSpectrum]
    ov: list[MatrixSpectrum]
    m_in: MatrixSpectrum
    m_out: MatrixSpectrum
    names: dict[str, str] = field(default_factory=dict)
    #: entrywise ‖·‖_{1,1} of the layer's weights (Trauger & Tewari's tracked quantities)
    weight_norms: WeightNorms | None = None
    #: the value path ``VO[ℓ] = W_V W_O``, a link of this project's layer chain (bounds.md §6)
    vo: LinkNorms | None = None


@dataclass
class ModelSpectra:
    """Every spectrum of a model plus its :class:`ModelInfo`."""

    info: ModelInfo
    layers: list[LayerSpectra]
    dense: bool = False
    #: some spectra are estimates (``--approx``): :class:`~specbound.spectra.approx.ApproxSpectrum`
    approx: bool = False
    #: ``{"dir", "hits", "misses", "corrupt", "writes"}`` when a spectra cache was used
    cache_stats: dict[str, Any] | None = None

    def matrix(self, layer: int, head: int, kind: str) -> MatrixSpectrum:
        ls = self.layers[layer]
        if kind == "QK":
            return ls.qk[head]
        if kind == "OV":
            return ls.ov[head]
        if kind == "M_in":
            return ls.m_in
        if kind == "M_out":
            return ls.m_out
        raise KeyError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")

    def matrices(self) -> Iterator[tuple[int, int, str, MatrixSpectrum]]:
        """``(layer, head, kind, spectrum)`` for every analysed matrix; head −1 for M_in/M_out."""
        for ls in self.layers:
            for h, m in enumerate(ls.qk):
                yield ls.layer, h, "QK", m
            for h, m in enumerate(ls.ov):
                yield ls.layer, h, "OV", m
            yield ls.layer, -1, "M_in", ls.m_in
            yield ls.layer, -1, "M_out", ls.m_out

    def spectral_norms(self) -> dict[str, np.ndarray]:
        """``C_2`` per kind: ``QK``/``OV`` ``[L, H]``, ``M_in``/``M_out`` ``[L]`` (float64)."""
        def top(m: MatrixSpectrum) -> float:
            return float(m.values[0]) if m.values.numel() else 0.0

        return {
            "QK": np.array([[top(m) for m in ls.qk] for ls in self.layers]),
            "OV": np.array([[top(m) for m in ls.ov] for ls in self.layers]),
            "M_in": np.array([top(ls.m_in) for ls in self.layers]),
            "M_out": np.array([top(ls.m_out) for ls in self.layers]),
        }
