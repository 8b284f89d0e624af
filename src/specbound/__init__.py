"""specbound: per-head spectra and spectrum-adaptive / norm-based generalisation bounds of
trained Transformers.

>>> import specbound
>>> report = specbound.analyze("path/to/hf-model")        # doctest: +SKIP
>>> report.bounds["spectrum_adaptive"].log10_value         # doctest: +SKIP

The names below are imported on first use (PEP 562), so ``import specbound`` (and the
``specbound`` command before it runs an analysis) does not import torch or pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the module that defines it
_EXPORTS = {
    "Report": "specbound.analysis",
    "analyze": "specbound.analysis",
    "attention": "specbound.data",
    "AttentionResult": "specbound.data",
    "Bound": "specbound.bounds",
    "BoundParams": "specbound.bounds",
    "BoundResult": "specbound.bounds",
    "available_bounds": "specbound.bounds",
    "register_bound": "specbound.bounds",
    "InputError": "specbound.errors",
    "SpecboundError": "specbound.errors",
    "open_weights": "specbound.weights.adapters",
    "LayerWeights": "specbound.weights.canonical",
    "ModelInfo": "specbound.weights.canonical",
    "Note": "specbound.weights.canonical",
    "TransformerWeights": "specbound.weights.canonical",
    "Tracker": "specbound.integrations.tracker",
}

#: subpackages reachable as attributes after a bare ``import specbound`` (as when they were
#: imported eagerly)
_SUBMODULES = {
    "analysis", "bounds", "cli", "data", "errors", "experiments", "integrations", "measures", "parallel",
    "report", "spectra", "weights",
}

__all__ = [
    "AttentionResult",
    "Bound",
    "BoundParams",
    "BoundResult",
    "InputError",
    "LayerWeights",
    "ModelInfo",
    "Note",
    "Report",
    "SpecboundError",
    "Tracker",
    "TransformerWeights",
    "analyze",
    "attention",
    "available_bounds",
    "open_weights",
    "register_bound",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from specbound.analysis import Report, analyze
    from specbound.data import AttentionResult, attention
    from specbound.bounds import Bound, BoundParams, BoundResult, available_bounds, register_bound
    from specbound.errors import InputError, SpecboundError
    from specbound.integrations.tracker import Tracker
    from specbound.weights.adapters import open_weights
    from specbound.weights.canonical import LayerWeights, ModelInfo, Note, TransformerWeights
