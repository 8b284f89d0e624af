"""Bound families: one module each, registered by name; user families by ``register_bound`` or
Python entry points (group ``specbound.bounds``).

A family is any object with the attributes ``name`` (str), ``citation`` (str), ``status``
(``bound``/``proxy``/``baseline``/``measure``) and a method
``evaluate(inp: BoundInput, params: BoundParams) -> BoundResult`` (see :class:`BoundLike`);
``title``, ``assumptions`` and ``needs`` are optional. Subclassing :class:`Bound` gives all of them.
``inp`` carries the model info, the :class:`~specbound.measures.MatrixTable` (every per-matrix
measure, α, γ*, the distances to a reference), the spectra and the reference spectra; it also
answers the spectra's ``layers``, ``matrices()``, ``spectral_norms()`` … so that families written
for the earlier ``evaluate(spectra, params)`` keep working.

Entry points are loaded lazily, once, by the first :func:`available_bounds` call. An entry point
may name a :class:`Bound` instance, a class (instantiated without arguments) or a zero-argument
factory; one that fails to load is an error naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from specbound.bounds.base import Bound, BoundInput, BoundParams, BoundResult, NotApplicable, missing_input
from specbound.bounds.classic import FroOverSpec, LogProdSpec, ParamCount, SumFro
from specbound.bounds.edelman import Edelman, EdelmanSeqLen
from specbound.bounds.effective_rank import EffectiveRank
from specbound.bounds.spectral_baselines import BartlettSpectral, NeyshaburPacBayes
from specbound.bounds.spectrum_adaptive import SpectrumAdaptive
from specbound.bounds.trauger_tewari import TraugerTewariL11, TraugerTewariProxy
from specbound.errors import InputError, SpecboundError

ENTRY_POINT_GROUP = "specbound.bounds"
STATUSES = ("bound", "proxy", "baseline", "measure")

_REGISTRY: dict[str, Any] = {}
_BUILTIN: set[str] = set()
_plugins_loaded = False


class BoundError(SpecboundError):
    """A bound family (typically a user's) failed to load or to evaluate; the message names it."""


@runtime_checkable
class BoundLike(Protocol):
    """What ``register_bound`` accepts (structural: no need to subclass :class:`Bound`)."""

    name: str
    citation: str
    status: str

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult: ...


def register_bound(bound: Any) -> Any:
    """Register a bound family instance under ``bound.name`` (replaces one of the same name).

    ``bound`` needs a non-empty ``name``, a ``citation``, a ``status`` and a callable ``evaluate``;
    a :class:`Bound` subclass (the class itself) is instantiated.
    """
    if isinstance(bound, type):
        bound = bound()
    name = getattr(bound, "name", "")
    if not isinstance(name, str) or not name:
        raise ValueError("a bound needs a non-empty 'name'")
    if not callable(getattr(bound, "evaluate", None)):
        raise ValueError(f"bound {name!r} needs a method evaluate(inp, params) -> BoundResult")
    for attr in ("citation", "status"):
        if not isinstance(getattr(bound, attr, None), str):
            raise ValueError(f"bound {name!r} needs a string attribute {attr!r}")
    _REGISTRY[name] = bound
    return bound


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def load_plugins(*, force: bool = False) -> list[str]:
    """Load the ``specbound.bounds`` entry points (once; ``force`` reloads); return their names."""
    global _plugins_loaded
    if _plugins_loaded and not force:
        return []
    _plugins_loaded = True
    loaded = []
    for ep in _entry_points():
        try:
            obj = ep.load()
            if isinstance(obj, type) or not hasattr(obj, "evaluate"):
                obj = obj()
            register_bound(obj)
        except Exception as e:  # noqa: BLE001 - any failure of a plugin is reported by name
            _plugins_loaded = False  # report again next time instead of silently missing it
            raise BoundError(
                f"bound plugin {ep.name!r} (entry point {ep.value!r} in group {ENTRY_POINT_GROUP!r}) "
                f"failed to load: {type(e).__name__}: {e}"
            ) from e
        loaded.append(getattr(obj, "name", ep.name))
    return loaded


def available_bounds() -> dict[str, Any]:
    """Every registered family by name (built-ins, ``register_bound`` calls, entry points)."""
    load_plugins()
    return dict(_REGISTRY)


def needs_of(bound: Any) -> tuple[str, ...]:
    """The inputs a family needs beyond the spectra (``seq_len``, ``init``, ``init?`` = optional)."""
    return tuple(getattr(bound, "needs", ()) or ())


def evaluate_bounds(
    families: Mapping[str, Any], inp: BoundInput, params: BoundParams, *, explicit: bool = False
) -> tuple[dict[str, BoundResult], list[dict[str, str]]]:
    """Evaluate ``families``; return ``(results, not_evaluated)``.

    A family whose required input is absent (``needs``) or that raises :class:`NotApplicable`
    lands in ``not_evaluated`` as ``{"bound", "reason"}`` — unless ``explicit`` (the user named
    it) and an input is missing, which is an :class:`InputError`. A result must be a
    :class:`BoundResult` with a finite ``log10_value``; a user family that fails otherwise is a
    :class:`BoundError` naming it.
    """
    results: dict[str, BoundResult] = {}
    skipped: list[dict[str, str]] = []
    for name, fam in families.items():
        why = missing_input(fam, inp, params)
        if why is not None:
            if explicit:
                raise InputError(f"bound {name!r} {why}.")
            skipped.append({"bound": name, "reason": why})
            continue
        try:
            res = fam.evaluate(inp, params)
        except NotApplicable as e:
            skipped.append({"bound": name, "reason": str(e)})
            continue
        except SpecboundError:
            raise
        except Exception as e:
            if name in _BUILTIN:
                raise
            raise BoundError(f"bound {name!r} failed: {type(e).__name__}: {e}") from e
        if not isinstance(res, BoundResult):
            raise BoundError(f"bound {name!r} returned {type(res).__name__}, not a BoundResult.")
        if not (isinstance(res.log10_value, (int, float)) and math.isfinite(res.log10_value)):
            raise BoundError(
                f"bound {name!r} returned log10_value {res.log10_value!r}; it must be finite "
                "(raise specbound.bounds.NotApplicable for a value that is 0 or undefined)."
            )
        results[name] = res
    return results, skipped


def check_seq_len(seq_len: Any) -> None:
    """``seq_len`` is ``None`` or an integer ≥ 2 (T enters as ln T); else :class:`InputError`."""
    if seq_len is None:
        return
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise InputError(f"seq_len must be an integer >= 2 (the sequence length T), got {seq_len!r}.")


for _b in (
    SpectrumAdaptive(), Edelman(), EdelmanSeqLen(), TraugerTewariL11(), TraugerTewariProxy(),
    BartlettSpectral(), NeyshaburPacBayes(), EffectiveRank(), LogProdSpec(), SumFro(), FroOverSpec(), ParamCount(),
):
    register_bound(_b)
    _BUILTIN.add(_b.name)

__all__ = [
    "Bound",
    "BoundError",
    "BoundInput",
    "BoundLike",
    "BoundParams",
    "BoundResult",
    "ENTRY_POINT_GROUP",
    "NotApplicable",
    "available_bounds",
    "evaluate_bounds",
    "check_seq_len",
    "load_plugins",
    "needs_of",
    "register_bound",
]
