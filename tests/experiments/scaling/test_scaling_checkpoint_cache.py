"""E2's checkpoint cache (scaling/synthetic.py): a cached checkpoint is reused only when its
stored SHA-256 checksums match and it loads; a truncated, edited or checksum-less one is
retrained; a checkpoint is written into a temporary folder and moved into place by one rename,
so a crash while writing leaves the previous state (and no temporary folder once rerun)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specbound.experiments.scaling import synthetic as synth

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = synth.Recipe(steps=2, batch_size=8, n_train=32, n_heldout=16, seq_len=16, lr=3e-3)
L, N = 1, 32


@pytest.fixture(scope="module")
def corpora():
    return synth.make_corpora(RECIPE, seed=0)


def _train(d: Path, corpora) -> dict:
    return synth.train_one(L, N, d, corpora, RECIPE, seed=0)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.parent.iterdir() if p.name.startswith("."))


def test_written_with_checksums_and_reused_when_intact(tmp_path: Path, corpora) -> None:
    d = tmp_path / "checkpoints" / "L1_N32"
    meta = _train(d, corpora)
    assert meta["reused"] is False
    stored = json.loads((d / synth.TRAINING_META).read_text())
    assert set(stored["sha256"]) == {"config.json", "model.safetensors"}
    assert stored["sha256"]["model.safetensors"] == synth._sha256(d / "model.safetensors")
    assert _leftovers(d) == []  # the temporary folder was renamed into place
    again = _train(d, corpora)
    assert again["reused"] is True and again["heldout_masked_ce"] == meta["heldout_masked_ce"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "config", "no-checksums", "bad-json", "no-weights"])
def test_damaged_cache_is_retrained(tmp_path: Path, corpora, damage: str) -> None:
    d = tmp_path / "L1_N32"
    _train(d, corpora)
    w = d / "model.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "flip":  # same size, one bit of the data: only the checksum sees it
        b = bytearray(w.read_bytes())
        b[-5] ^= 0x01
        w.write_bytes(bytes(b))
    elif damage == "config":
        cfg = json.loads((d / "config.json").read_text())
        cfg["hidden_act"] = "relu"
        (d / "config.json").write_text(json.dumps(cfg))
    elif damage == "no-checksums":  # a cache written before checksums were stored
        meta = json.loads((d / synth.TRAINING_META).read_text())
        del meta["sha256"]
        (d / synth.TRAINING_META).write_text(json.dumps(meta))
    elif damage == "bad-json":
        (d / synth.TRAINING_META).write_text("{")
    else:
        w.unlink()
    key = RECIPE.key(0)
    assert synth.verify_checkpoint(d, L, N, key) is None
    meta = _train(d, corpora)
    assert meta["reused"] is False
    assert synth.verify_checkpoint(d, L, N, key) is not None  # intact again
    assert _leftovers(d) == []


def test_crash_while_writing_keeps_the_old_checkpoint(tmp_path: Path, corpora, monkeypatch) -> None:
    d = tmp_path / "L1_N32"
    _train(d, corpora)
    before = {f.name: f.read_bytes() for f in d.iterdir()}
    (d / "model.safetensors").write_bytes(b"x" * 10)  # now corrupt: the next call retrains
    before["model.safetensors"] = b"x" * 10

    def crash(model, out_dir):
        (Path(out_dir) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synth.hf_bert, "save_quietly", crash)
    with pytest.raises(OSError):
        _train(d, corpora)
    assert {f.name: f.read_bytes() for f in d.iterdir()} == before  # untouched, not half-replaced
    assert _leftovers(d) == []


def test_stale_temporary_folders_of_dead_runs_are_removed(tmp_path: Path, corpora) -> None:
    d = tmp_path / "L1_N32"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    import os

    live_pid = os.getppid()  # alive (pytest's parent)
    for name in (f".L1_N32.tmp-{dead_pid}", f".L1_N32.old-{dead_pid}", f".L1_N32.tmp-{live_pid}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"partial")
    _train(d, corpora)
    assert _leftovers(d) == [f".L1_N32.tmp-{live_pid}"]  # another live run's folder is left alone
