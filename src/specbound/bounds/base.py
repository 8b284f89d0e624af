"""What a bound family is: a small object with a name, a citation, its assumptions, and
``evaluate(inp: BoundInput, params: BoundParams) -> BoundResult``. Bounds are data in, data
out: the :class:`BoundInput` (model info, :class:`~specbound.measures.MatrixTable`, spectra,
reference spectra) is built before any bound runs, and a family only applies its formula.

Everything is evaluated in natural-log space; ``BoundResult.value`` is the float when it is
representable in float64 and ``None`` when it overflows (``log10_value`` is always finite).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from specbound.measures import MatrixTable
    from specbound.spectra.spectrum import LayerSpectra, MatrixSpectrum, ModelSpectra
    from specbound.weights.canonical import ModelInfo

LN10 = math.log(10.0)
_LN_FLOAT_MAX = math.log(np.finfo(np.float64).max)


@dataclass
class BoundParams:
    """Parameters shared by the bound families.

    ``l_phi``: Lipschitz constant of the activation (GELU 1.13, ReLU 1).
    ``grid_m``: resolution m of the Schatten-index grid ``{0, 1/m, …, 2}``; ``None`` → ⌈L + ln N⌉.
    ``seq_len``: sequence length T for families with a log T factor (``None``: not given).
    """

    l_phi: float = 1.13
    grid_m: int | None = None
    seq_len: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"l_phi": self.l_phi, "grid_m": self.grid_m, "seq_len": self.seq_len}


@dataclass
class BoundInput:
    """Everything a family may read, computed before any family runs.

    ``info``: the architecture. ``table``: the :class:`~specbound.measures.MatrixTable` (one row
    per matrix, every measure of ``bounds.md`` §3, α and γ*, the distances to the reference).
    ``spectra``: the full spectra (``ModelSpectra``; e.g. for Schatten sums). ``reference``: the
    spectra of the differences ``A − A_0`` to the ``--init`` checkpoint, ``None`` without one;
    ``reference_source``: where that checkpoint came from.

    Families written for the earlier ``evaluate(spectra, params)`` signature keep working: the
    input also answers ``layers``, ``matrices()``, ``matrix()``, ``spectral_norms()``, ``dense``
    and ``approx`` as the spectra do.
    """

    info: "ModelInfo"
    table: "MatrixTable"
    spectra: "ModelSpectra"
    reference: "ModelSpectra | None" = None
    reference_source: str | None = None

    @property
    def dense(self) -> bool:
        return self.spectra.dense

    @property
    def approx(self) -> bool:
        return self.spectra.approx

    @property
    def layers(self) -> "list[LayerSpectra]":
        return self.spectra.layers

    def matrices(self) -> "Iterator[tuple[int, int, str, MatrixSpectrum]]":
        return self.spectra.matrices()

    def matrix(self, layer: int, head: int, kind: str) -> "MatrixSpectrum":
        return self.spectra.matrix(layer, head, kind)

    def spectral_norms(self) -> dict[str, np.ndarray]:
        return self.spectra.spectral_norms()

    def reference_notes(self, what: str) -> list[str]:
        """The note saying whether distances are to a reference checkpoint or to zero."""
        if self.reference is not None:
            return [f"{what} measured as distances A - A_0 to the reference checkpoint {self.reference_source}"]
        return [f"{what} measured from zero (no reference checkpoint; pass --init / init= for distances to "
                "initialisation)"]

    def architecture_notes(self) -> list[str]:
        """The model's violated assumptions, as ``code: message`` lines."""
        return [f"{n.code}: {n.message}" for n in self.info.notes]


class NotApplicable(Exception):
    """Raised by :meth:`Bound.evaluate` when a family cannot be evaluated on this input (a missing
    parameter, a zero complexity whose log is -inf, …). The message says why; :func:`analyze`
    records it in ``Report.not_evaluated`` instead of a value (never NaN, never a silent skip)."""


@dataclass
class BoundResult:
    """A bound's value, in linear and log10 form, the notes on it and its per-term table
    (``terms``: keyed like the MatrixTable, by ``layer``, ``head`` and ``kind`` where the terms are
    per matrix; by ``layer``, ``head`` and ``weight`` where they are per stored weight)."""

    name: str
    log10_value: float
    status: str  # "bound", "proxy", "baseline" or "measure"
    citation: str
    notes: list[str] = field(default_factory=list)
    terms: pd.DataFrame = field(default_factory=pd.DataFrame)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The value as a float, or ``None`` when it exceeds float64 (see ``log10_value``)."""
        return value_from_ln(self.log10_value * LN10)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "log10_value": self.log10_value,
            "status": self.status,
            "citation": self.citation,
            "notes": list(self.notes),
            "params": dict(self.params),
        }


class Bound:
    """Base class of a bound family. Subclasses set the class attributes and ``evaluate``."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    status: ClassVar[str] = "proxy"
    assumptions: ClassVar[tuple[str, ...]] = ()
    #: inputs beyond the spectra: ``"seq_len"`` (required), ``"init"`` (required),
    #: ``"init?"`` (optional: distances to the reference when given, else to zero)
    needs: ClassVar[tuple[str, ...]] = ()

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        raise NotImplementedError

    def result(self, inp: BoundInput, ln_value: float, *, notes: list[str], terms: pd.DataFrame,
               params: dict[str, Any]) -> BoundResult:
        """A :class:`BoundResult` of this family from its natural-log value; the model's
        architecture notes are appended to ``notes``."""
        return BoundResult(name=self.name, log10_value=ln_value / LN10, status=self.status, citation=self.citation,
                           notes=notes + inp.architecture_notes(), terms=terms, params=params)


def missing_input(bound: Any, inp: BoundInput, params: BoundParams) -> str | None:
    """Why ``bound`` cannot run (a required input of its ``needs`` absent), else ``None``."""
    needs = getattr(bound, "needs", ()) or ()
    if "seq_len" in needs and params.seq_len is None:
        return "needs the sequence length T (--seq-len / seq_len=)"
    if "init" in needs and inp.reference is None:
        return "needs a reference checkpoint (--init / init=)"
    return None


def value_from_ln(ln: float) -> float | None:
    """``exp(ln)`` when representable in float64, else ``None`` (0.0 for ``ln = -inf``)."""
    if ln == -math.inf:
        return 0.0
    if ln >= _LN_FLOAT_MAX:
        return None
    return math.exp(ln)
