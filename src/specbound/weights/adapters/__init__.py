"""Registry of architecture adapters: ``model_type`` → adapter class.

Add a family by writing ``adapters/<family>.py`` with an :class:`Adapter` subclass and listing
it in ``_ADAPTERS`` below.
"""

from __future__ import annotations

from typing import Any

from specbound.errors import InputError, UnsupportedArchitectureError
from specbound.weights.adapters.base import Adapter
from specbound.weights.adapters.bert import BertAdapter
from specbound.weights.adapters.distilbert import DistilBertAdapter
from specbound.weights.adapters.gpt2 import GPT2Adapter
from specbound.weights.adapters.llama import LlamaAdapter
from specbound.weights.canonical import TransformerWeights
from specbound.weights.sources import TensorSource, open_source

_ADAPTERS: list[type[Adapter]] = [BertAdapter, DistilBertAdapter, GPT2Adapter, LlamaAdapter]


def registry() -> dict[str, type[Adapter]]:
    """``model_type`` → adapter class, for every supported family."""
    return {mt: a for a in _ADAPTERS for mt in a.model_types}


def supported_model_types() -> list[str]:
    return sorted(registry())


def adapter_for(src: TensorSource) -> Adapter:
    """The adapter for ``src``'s config ``model_type``; a clear error when unsupported."""
    if src.config is None:
        raise InputError(
            f"{src.description}: no model config; pass config=... (--config FILE) or a name "
            "mapping (--mapping FILE)."
        )
    mt = src.config.get("model_type")
    if mt is not None and not isinstance(mt, str):
        raise InputError(
            f"{src.description}: the config's 'model_type' must be a string (one of "
            f"{', '.join(supported_model_types())}), got {type(mt).__name__} {_short(mt)}; fix config.json."
        )
    if not mt:
        raise InputError(
            f"{src.description}: the config has no 'model_type'; add it (one of "
            f"{', '.join(supported_model_types())}) or pass a name mapping (--mapping FILE)."
        )
    reg = registry()
    if mt not in reg:
        raise UnsupportedArchitectureError(
            f"{src.description}: model_type {mt!r} is not supported (supported: "
            f"{', '.join(supported_model_types())}). Analyse it with a name mapping: "
            "--mapping FILE (see README, 'Custom models')."
        )
    return reg[mt](src, src.config)


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def open_weights(source: Any, config: Any = None, mapping: Any = None) -> TransformerWeights:
    """Open any supported source as :class:`TransformerWeights` (lazy, layer by layer).

    ``mapping``: a dict or JSON file of tensor-name templates for custom models (see
    :mod:`specbound.weights.adapters.custom`); it bypasses ``model_type`` dispatch.
    """
    if isinstance(source, TransformerWeights):
        return source
    if mapping is not None and config is None:
        config = {}  # a mapping carries L, N, H itself: no config.json needed
    src = open_source(source, config=config)
    if mapping is not None:
        from specbound.weights.adapters.custom import MappingAdapter

        return MappingAdapter.from_mapping(src, mapping).weights()
    return adapter_for(src).weights()
