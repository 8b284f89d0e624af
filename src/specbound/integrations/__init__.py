"""Bounds during training: a plain :class:`~specbound.integrations.tracker.Tracker` for any loop,
``specbound.integrations.hf.SpecboundCallback`` (a ``transformers.TrainerCallback``) and
``specbound.integrations.lightning.SpecboundLightningCallback`` (optional extra
``specbound[lightning]``). Each update calls the public pipeline (``analyze`` on the live module)
and appends to a tidy time series (``track.csv``, ``track_layers.csv``); see
:mod:`specbound.integrations.records`.

The names below load on first use, so importing this package imports neither torch nor
transformers nor Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Tracker": "specbound.integrations.tracker",
    "MemorySpectraCache": "specbound.integrations.memory",
    "TRACK_FILE": "specbound.integrations.records",
    "LAYERS_FILE": "specbound.integrations.records",
    "write_track_plots": "specbound.integrations.plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from specbound.integrations.memory import MemorySpectraCache
    from specbound.integrations.plots import write_track_plots
    from specbound.integrations.records import LAYERS_FILE, TRACK_FILE
    from specbound.integrations.tracker import Tracker
