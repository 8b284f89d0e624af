"""Shared experiment helpers (experiments/common.py): seeds, threads, versions, atomic files,
the keyed run cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from specbound.experiments.common import (
    config_hash,
    load_keyed,
    run_rng,
    save_keyed,
    torch_threads,
    versions,
    write_json_atomic,
)


def test_run_rng_streams_depend_on_their_keys_only() -> None:
    a = run_rng(3, 1, 2).random(5)
    assert np.array_equal(a, run_rng(3, 1, 2).random(5))
    assert not np.array_equal(a, run_rng(3, 2, 1).random(5))
    assert not np.array_equal(a, run_rng(4, 1, 2).random(5))
    with pytest.raises(ValueError):
        run_rng(-1)


def test_torch_threads_restores_the_setting() -> None:
    old = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    with torch_threads(None):
        assert torch.get_num_threads() == old


def test_versions_has_every_library_of_the_experiments() -> None:
    v = versions()
    for key in ("python", "platform", "numpy", "torch", "pandas", "matplotlib", "scipy", "specbound"):
        assert key in v and v[key], key
    assert v["torch"] == torch.__version__ and v["numpy"] == np.__version__


def test_keyed_cache_returns_only_the_same_key(tmp_path: Path) -> None:
    p = tmp_path / "runs" / "a.pt"
    save_keyed(p, {"seed": 1}, {"x": torch.arange(3)})
    blob = load_keyed(p, {"seed": 1})
    assert blob is not None and torch.equal(blob["x"], torch.arange(3))
    assert load_keyed(p, {"seed": 2}) is None
    assert load_keyed(tmp_path / "missing.pt", {"seed": 1}) is None
    p.write_bytes(b"truncated")
    assert load_keyed(p, {"seed": 1}) is None
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})


def test_write_json_atomic_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "sub" / "c.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "sub" / "c.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["c.json"]
