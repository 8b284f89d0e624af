"""Spectra held in memory between the updates of a training run, keyed by tensor content.

:class:`MemorySpectraCache` is a :class:`~specbound.spectra.cache.SpectraCache` without the disk:
the same block keys (BLAKE2b of the format, the block name, the options that change its result
and the content of every tensor the block comes from: ``SpectraCache.block_key``), the entries
are the computed :class:`~specbound.spectra.spectrum.MatrixSpectrum` lists themselves. Handed to
``analyze(model, cache=...)``, it makes an update recompute only the blocks whose tensors changed
since the previous update: a frozen layer (or a LoRA's frozen base) is computed once.

Entries not used by the latest update are dropped at :meth:`end_update` (their tensors changed;
the same content will not come back), so the store holds at most one model's spectra.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from specbound.spectra.cache import CacheStats, SpectraCache

if TYPE_CHECKING:
    from specbound.spectra.blocks import Block
    from specbound.spectra.compute import SpectraPolicy
    from specbound.spectra.spectrum import MatrixSpectrum
    from specbound.weights.canonical import LayerWeights

__all__ = ["MemorySpectraCache"]


class MemorySpectraCache(SpectraCache):
    """A content-keyed spectra store in memory (module docstring).

    ``stats``: the counts of the current update (``hits`` reused, ``misses`` computed);
    ``total``: the counts over every update; ``computed[(layer, block)]``: how many times the
    block (``qk``, ``ov``, ``m_in``, ``m_out``) of a layer was computed.
    """

    def __init__(self) -> None:  # no folder: deliberately not SpectraCache.__init__
        self.root = Path("<memory>")
        self.stats = CacheStats()
        self.total = CacheStats()
        self.computed: Counter[tuple[int, str]] = Counter()
        self._entries: dict[str, list[MatrixSpectrum]] = {}
        self._used: set[str] = set()
        self._keys: dict[int, str] = {}  # id(block) → key, from get() to the put() that follows

    def __len__(self) -> int:
        return len(self._entries)

    def begin_update(self) -> None:
        """Start counting an update (``stats`` reset; entries kept)."""
        self.stats = CacheStats()
        self._used = set()
        self._keys = {}

    def end_update(self) -> None:
        """Add the update's counts to ``total`` and drop the entries it did not use."""
        self.total.hits += self.stats.hits
        self.total.misses += self.stats.misses
        self.total.writes += self.stats.writes
        self._entries = {k: v for k, v in self._entries.items() if k in self._used}
        self._keys = {}

    def get(self, block: "Block", policy: "SpectraPolicy", lw: "LayerWeights") -> "list[MatrixSpectrum] | None":
        """The block's spectra when an earlier update computed them from the same tensors."""
        key = self.block_key(block, policy, lw)
        self._keys[id(block)] = key
        self._used.add(key)
        specs = self._entries.get(key)
        if specs is None:
            return None
        self.stats.hits += 1
        return list(specs)

    def put(self, block: "Block", policy: "SpectraPolicy", lw: "LayerWeights", specs: "list[MatrixSpectrum]") -> None:
        """Hold a block computed in this update (counted as a miss)."""
        key = self._keys.pop(id(block), None) or self.block_key(block, policy, lw)
        self._used.add(key)
        self._entries[key] = list(specs)
        self.stats.misses += 1
        self.stats.writes += 1
        self.computed[(lw.index, block.name)] += 1
