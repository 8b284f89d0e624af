"""What a bound family is: a small object with a name, a citation, its assumptions, and
``evaluate(spectra, params) -> BoundResult``. Bounds are data in, data out: no I/O.

Everything is evaluated in natural-log space; ``BoundResult.value`` is the float when it is
representable in float64 and ``None`` when it overflows (``log10_value`` is always finite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from specbound.spectra.model import ModelSpectra

LN10 = math.log(10.0)
_LN_FLOAT_MAX = math.log(np.finfo(np.float64).max)


@dataclass
class BoundParams:
    """Parameters shared by the bound families.

    ``l_phi``: Lipschitz constant of the activation (GELU 1.13, ReLU 1).
    ``grid_m``: resolution m of the Schatten-index grid ``{0, 1/m, …, 2}``; ``None`` → ⌈L + ln N⌉.
    ``seq_len``: sequence length T for families with a log T factor (``None``: not given).
    ``reference``: spectra of the *difference model* ``A − A_0`` against a reference checkpoint
    (``init=``; see :func:`specbound.bounds.reference.difference_weights`), ``None`` without one.
    ``init_source``: where the reference came from (for the report).
    """

    l_phi: float = 1.13
    grid_m: int | None = None
    seq_len: int | None = None
    reference: ModelSpectra | None = None
    init_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"l_phi": self.l_phi, "grid_m": self.grid_m, "seq_len": self.seq_len, "init": self.init_source}


class NotApplicable(Exception):
    """Raised by :meth:`Bound.evaluate` when a family cannot be evaluated on this input (a missing
    parameter, a zero complexity whose log is -inf, …). The message says why; :func:`analyze`
    records it in ``Report.not_evaluated`` instead of a value (never NaN, never a silent skip)."""


@dataclass
class BoundResult:
    """A bound's value, in linear and log10 form, the notes on it and its per-term table."""

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

    def evaluate(self, spectra: ModelSpectra, params: BoundParams) -> BoundResult:
        raise NotImplementedError

    def missing(self, params: BoundParams) -> str | None:
        """Why the family cannot run with ``params`` (a required input absent), else ``None``."""
        needs = getattr(self, "needs", ()) or ()
        if "seq_len" in needs and params.seq_len is None:
            return "needs the sequence length T (--seq-len / seq_len=)"
        if "init" in needs and params.reference is None:
            return "needs a reference checkpoint (--init / init=)"
        return None

    def architecture_notes(self, spectra: ModelSpectra) -> list[str]:
        """The model's violated assumptions, as ``code: message`` lines."""
        return [f"{n.code}: {n.message}" for n in spectra.info.notes]


def safe_log(x: np.ndarray | float) -> np.ndarray:
    """Natural log with ``log 0 = -inf`` and no warning (inputs are ≥ 0)."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, dtype=np.float64))


def logsumexp(x: np.ndarray) -> float:
    """``ln Σ exp(x)`` over the finite entries; ``-inf`` when there are none."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return -math.inf
    m = float(x.max())
    return m + math.log(float(np.exp(x - m).sum()))


def value_from_ln(ln: float) -> float | None:
    """``exp(ln)`` when representable in float64, else ``None`` (0.0 for ``ln = -inf``)."""
    if ln == -math.inf:
        return 0.0
    if ln >= _LN_FLOAT_MAX:
        return None
    return math.exp(ln)


def ln_alpha(spectra: ModelSpectra, l_phi: float) -> np.ndarray:
    """``ln α[ℓ]`` of ``bounds.md`` §4, ``[L]``; the last layer has α = 1.

    α[ℓ] = Π_{k>ℓ} L_φ · C_2(M_in[k]) · C_2(M_out[k]) · Σ_h C_2(OV[k,h]) · (1 + 4 C_2(QK[k,h]))
    """
    c2 = spectra.spectral_norms()
    per_layer = (
        math.log(l_phi)
        + safe_log(c2["M_in"])
        + safe_log(c2["M_out"])
        + safe_log(np.sum(c2["OV"] * (1.0 + 4.0 * c2["QK"]), axis=1))
    )  # [L]: ln of the factor contributed by layer k
    L = per_layer.size
    out = np.zeros(L)
    for ell in range(L - 2, -1, -1):
        out[ell] = out[ell + 1] + per_layer[ell + 1]
    return out


def ln10(x: np.ndarray | float) -> np.ndarray | float:
    """Natural log → log10."""
    return np.asarray(x) / LN10 if isinstance(x, np.ndarray) else x / LN10
