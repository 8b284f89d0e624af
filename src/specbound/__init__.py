"""specbound: per-head spectra and spectrum-adaptive / norm-based generalisation bounds of
trained Transformers.

>>> import specbound
>>> report = specbound.analyze("path/to/hf-model")        # doctest: +SKIP
>>> report.bounds["spectrum_adaptive"].log10_value         # doctest: +SKIP
"""

__version__ = "0.1.0"

from specbound.analysis import Report, analyze  # noqa: E402
from specbound.bounds import Bound, BoundParams, BoundResult, available_bounds, register_bound  # noqa: E402
from specbound.errors import InputError, SpecboundError  # noqa: E402
from specbound.weights.adapters import open_weights  # noqa: E402
from specbound.weights.canonical import LayerWeights, ModelInfo, Note, TransformerWeights  # noqa: E402

__all__ = [
    "Bound",
    "BoundParams",
    "BoundResult",
    "InputError",
    "LayerWeights",
    "ModelInfo",
    "Note",
    "Report",
    "SpecboundError",
    "TransformerWeights",
    "analyze",
    "available_bounds",
    "open_weights",
    "register_bound",
]
