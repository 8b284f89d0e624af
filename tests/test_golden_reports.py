"""Numbers stay: every golden case (tests/golden/cases.py) recomputed and compared to the files
written by tests/golden/make_golden.py, numbers to 1e-12 relative, labels exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path[:0] = [str(GOLDEN)]

from cases import CASES, compare, snapshot  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("golden")


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name: str, work: Path) -> None:
    expected = json.loads((GOLDEN / "data" / f"{name}.json").read_text())
    actual = json.loads(json.dumps(snapshot(CASES[name](work), work), allow_nan=True))
    diffs = compare(expected, actual)
    assert not diffs, f"{name}: {len(diffs)} differences, first: " + "; ".join(diffs[:8])


def test_compare_catches_a_change() -> None:
    """The comparison itself fails on a relative change above 1e-12, a new key and a label."""
    a = {"x": [1.0, {"y": 2.0}], "s": "QK"}
    assert compare(a, {"x": [1.0, {"y": 2.0 * (1 + 1e-13)}], "s": "QK"}) == []
    assert compare(a, {"x": [1.0, {"y": 2.0 * (1 + 1e-11)}], "s": "QK"})
    assert compare(a, {"x": [1.0, {"y": 2.0}], "s": "OV"})
    assert compare(a, {"x": [1.0, {"y": 2.0}], "s": "QK", "z": 1})
    assert compare(a, {"x": [1.0], "s": "QK"})
