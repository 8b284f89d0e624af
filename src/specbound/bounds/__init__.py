"""Bound families: one module each, registered by name."""

from __future__ import annotations

from specbound.bounds.base import Bound, BoundParams, BoundResult
from specbound.bounds.edelman import Edelman
from specbound.bounds.spectrum_adaptive import SpectrumAdaptive

_REGISTRY: dict[str, Bound] = {}


def register_bound(bound: Bound) -> Bound:
    """Register a bound family instance under ``bound.name`` (replaces one of the same name)."""
    if not getattr(bound, "name", ""):
        raise ValueError("a bound needs a non-empty 'name'")
    _REGISTRY[bound.name] = bound
    return bound


def available_bounds() -> dict[str, Bound]:
    """Every registered family by name."""
    return dict(_REGISTRY)


register_bound(SpectrumAdaptive())
register_bound(Edelman())

__all__ = ["Bound", "BoundParams", "BoundResult", "available_bounds", "register_bound"]
