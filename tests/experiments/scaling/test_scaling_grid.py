"""E2 grids (scaling/grid.py): grid files, the hub cache and downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specbound.errors import InputError
from specbound.experiments.scaling import grid


def test_read_grid_csv_and_json(tmp_path: Path) -> None:
    (tmp_path / "m1").mkdir()
    (tmp_path / "g.csv").write_text("source,L,N,name\nm1,2,64,small\norg/model-x,4,128,\n")
    g = grid.read_grid(tmp_path / "g.csv")
    assert g[0] == grid.GridEntry("small", str(tmp_path / "m1"), 2, 64)  # relative to the file
    assert g[1] == grid.GridEntry("L4_N128", "org/model-x", 4, 128)
    (tmp_path / "g.json").write_text(json.dumps([{"source": "a/b", "L": 2, "N": 64}, {"path": "c/d", "l": "6", "n": 256.0}]))
    assert [(e.source, e.L, e.N) for e in grid.read_grid(tmp_path / "g.json")] == [("a/b", 2, 64), ("c/d", 6, 256)]
    (tmp_path / "h.json").write_text(json.dumps({"models": [{"source": "a/b", "L": 2, "N": 64, "name": "x"}]}))
    assert grid.read_grid(tmp_path / "h.json")[0].name == "x"


@pytest.mark.parametrize(
    ("fname", "text", "match"),
    [
        ("a.csv", "source,L,N\nm,2,64\nm2,,64\n", r"row 3: missing 'L'"),
        ("a.csv", "source,L,N\nm,0,64\n", r"row 2: L must be a positive integer"),
        ("a.csv", "source,L,N\nm,2,abc\n", r"row 2: N must be a positive integer, got 'abc'"),
        ("a.csv", "source,L,N\nm,2,64.5\n", r"N must be a positive integer"),
        ("a.csv", "source,L,N\n,2,64\n", r"row 2: missing 'source'"),
        ("a.csv", "model,depth,width\nm,2,64\n", r"header must name the columns source, L, N"),
        ("a.csv", "source,L,N\n", r"lists no models"),
        ("a.csv", "source,L,N\nm,2,64\nn,2,64\n", r"row 3: \(L=2, N=64\) is listed twice"),
        ("a.json", "{not json", r"not valid JSON"),
        ("a.json", '{"x": 1}', r"expected a JSON list"),
        ("a.json", '[{"source": "m", "L": 2, "N": 64}, 5]', r"entry 1: expected an object"),
        ("a.json", '[{"source": "m", "L": true, "N": 64}]', r"entry 0: L must be a positive integer"),
        ("a.yaml", "x", r"must be .csv or .json"),
    ],
)
def test_read_grid_bad_rows(tmp_path: Path, fname: str, text: str, match: str) -> None:
    (tmp_path / fname).write_text(text)
    with pytest.raises(InputError, match=match):
        grid.read_grid(tmp_path / fname)


def test_cache_resolution_finds_snapshots(fake_cache: Path) -> None:
    assert grid.hub_cache_dir() == fake_cache
    path = grid.resolve_hub_checkpoint("google/bert_uncased_L-2_H-128_A-2")
    assert path == fake_cache / "models--google--bert_uncased_L-2_H-128_A-2" / "snapshots" / ("a" * 40)
    with pytest.raises(grid.CheckpointUnavailable, match="not in the local cache") as e:
        grid.resolve_hub_checkpoint("google/bert_uncased_L-4_H-128_A-2")
    assert e.value.offline
    present, missing = grid.resolve_entries(grid.miniature_ids())
    assert [e.name for e, _ in present] == ["L2_N128", "L2_N256"]
    assert len(missing) == 22 and all("offline" in why for _, why in missing)


def test_unreachable_hub_is_tried_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE, the first connection failure stops further download attempts."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = {"online": 0}

    def fake_snapshot_download(repo_id: str, **kw):  # type: ignore[no-untyped-def]
        if not kw.get("local_files_only"):
            calls["online"] += 1
        raise LocalEntryNotFoundError("ConnectError: Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    present, missing = grid.resolve_entries(grid.miniature_ids(), cache_dir=tmp_path)
    assert present == [] and len(missing) == 24
    assert calls["online"] == 1
    assert "the hub cannot be reached" in missing[0][1] and "offline" in missing[1][1]


def test_download_falls_back_to_pytorch_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online: safetensors are asked for first; a repo with only pytorch_model.bin gets that."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    asked: list[list[str]] = []

    def fake_snapshot_download(repo_id: str, **kw):  # type: ignore[no-untyped-def]
        if kw.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        patterns = list(kw["allow_patterns"])
        asked.append(patterns)
        snap = Path(kw["cache_dir"]) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / ("d" * 40)
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text("{}")
        if "pytorch_model.bin" in patterns:  # the repo has no safetensors
            (snap / "pytorch_model.bin").write_bytes(b"x")
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path = grid.resolve_hub_checkpoint("google/bert_uncased_L-2_H-128_A-2", cache_dir=tmp_path)
    assert (path / "pytorch_model.bin").is_file()
    assert len(asked) == 2 and "pytorch_model.bin" not in asked[0] and "*.safetensors" in asked[0]
