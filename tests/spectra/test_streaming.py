"""Streaming: after each layer nothing keeps that layer's tensors alive (plain, cached and
approximate paths), the report holds no weights, and shards are read without memory maps."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from specbound.spectra.approx import ApproxOptions
from specbound.spectra.compute import SpectraPolicy, compute_spectra
from specbound.weights.adapters import adapter_for
from specbound.weights.sources import open_source

from builders import _bert_state, bert_config


def _sharded(folder: Path, L: int = 3) -> Path:
    """A BERT checkpoint split into one shard per layer plus an index."""
    sd = _bert_state(L, 16, 4, 24, seed=0)
    folder.mkdir(parents=True)
    weight_map = {}
    for i in range(L):
        part = {k: v.contiguous() for k, v in sd.items() if f".layer.{i}." in k}
        name = f"model-{i + 1:05d}-of-{L:05d}.safetensors"
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(bert_config(L, 16, 4, 24)))
    return folder


class Recording:
    """A tensor source that remembers a weak reference to every tensor it hands out."""

    def __init__(self, src):
        self.src, self.description, self.config = src, src.description, src.config
        self.refs: list[tuple[str, weakref.ref]] = []

    def keys(self):
        return self.src.keys()

    def shape(self, name):
        return self.src.shape(name)

    def get(self, name):
        t = self.src.get(name)
        self.refs.append((name, weakref.ref(t)))
        return t


@pytest.mark.parametrize("mode", ["plain", "cache", "approx"])
def test_one_layer_resident(tmp_path, mode):
    rec = Recording(open_source(_sharded(tmp_path / "m")))
    weights = adapter_for(rec).weights()
    alive_after: list[list[str]] = []

    def progress(done: int, total: int) -> None:
        gc.collect()
        alive_after.append([n for n, r in rec.refs if r() is not None])

    cache = tmp_path / "c" if mode == "cache" else None
    policy = SpectraPolicy(approx=ApproxOptions(min_dim=0, block=2, block_steps=1, probes=2, steps=3)
                           if mode == "approx" else None)
    ms = compute_spectra(weights, policy, progress=progress, cache=cache)
    assert len(alive_after) == 3
    assert all(a == [] for a in alive_after), alive_after  # nothing of a finished layer survives
    assert len(rec.refs) >= 3 * 6
    # the result holds spectra only: every tensor in it is small (≤ N values)
    for _, _, _, m in ms.matrices():
        assert m.values.numel() <= 24


def test_shards_are_read_without_memory_maps(tmp_path, monkeypatch):
    import safetensors

    calls = []
    real = safetensors.safe_open

    def spy(*a, **k):
        calls.append(k.get("backend"))
        return real(*a, **k)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    src = open_source(_sharded(tmp_path / "m"))
    assert isinstance(src.get(src.keys()[0]), torch.Tensor)
    assert calls and all(c == "pread" for c in calls)
