"""The spectra cache: equal results, no linear algebra on a warm run, per-block invalidation,
corrupt entries detected and recomputed, options in the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import specbound
from specbound.errors import InputError
from specbound.spectra.cache import CACHE_FORMAT, SpectraCache, tensor_digest
from specbound.weights.adapters import open_weights
from specbound.spectra.compute import SpectraPolicy, compute_spectra

from builders import write_bert

L = 2
B = 5  # blocks per layer: qk, ov, m_in, m_out and the value-path link vo
LINALG = ("qr", "svd", "svdvals", "eigh", "eigvalsh", "eig", "eigvals", "lstsq", "matrix_rank")


def _same_spectra(a, b) -> None:
    ma, mb = list(a.matrices()), list(b.matrices())
    assert len(ma) == len(mb)
    for (l1, h1, k1, s1), (l2, h2, k2, s2) in zip(ma, mb):
        assert (l1, h1, k1) == (l2, h2, k2)
        assert torch.equal(s1.values, s2.values), (l1, h1, k1)
        assert s1.norm_21 == s2.norm_21 and s1.method == s2.method and (s1.rows, s1.cols) == (s2.rows, s2.cols)
    assert [la.vo for la in a.layers] == [lb.vo for lb in b.layers]  # the value-path links too


def _entries(cache_dir: Path, spectra_only: bool = False) -> list[Path]:
    """The cache's entry files; ``spectra_only``: those of matrix blocks (not the ``vo`` links)."""
    from safetensors import safe_open

    files = sorted((cache_dir / f"v{CACHE_FORMAT}").rglob("*.safetensors"))
    if spectra_only:
        def block(p: Path) -> str:
            with safe_open(str(p), framework="pt") as f:
                return (f.metadata() or {}).get("block", "")

        files = [p for p in files if block(p) != "vo"]
    return files


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_bert(tmp_path / "m", L=L, N=16, H=4, F=24, seed=3)


def test_cached_equals_uncached_bit_for_bit(model, tmp_path):
    w = open_weights(model)
    ref = compute_spectra(w)
    cold = compute_spectra(w, cache=tmp_path / "c")
    warm = compute_spectra(w, cache=tmp_path / "c")
    _same_spectra(ref, cold)
    _same_spectra(ref, warm)
    assert cold.cache_stats["misses"] == B * L and cold.cache_stats["hits"] == 0
    assert warm.cache_stats["hits"] == B * L and warm.cache_stats["misses"] == 0
    assert len(_entries(tmp_path / "c")) == B * L
    # the per-weight norms are filled on the cached path too (no linear algebra in them)
    for a, b in zip(ref.layers, warm.layers):
        if getattr(a, "weight_norms", None) is not None:
            assert b.weight_norms.totals == pytest.approx(a.weight_norms.totals, rel=1e-12)


def test_warm_run_with_other_bound_parameters_does_no_linear_algebra(model, tmp_path, monkeypatch):
    first = specbound.analyze(model, cache=tmp_path / "c")

    def forbidden(*a, **k):
        raise AssertionError("linear algebra on a warm cache run")

    for name in LINALG:
        monkeypatch.setattr(torch.linalg, name, forbidden)
    monkeypatch.setattr(torch, "svd", forbidden)
    second = specbound.analyze(model, cache=tmp_path / "c", l_phi=1.0, grid_m=9,
                               bounds="spectrum_adaptive,edelman")
    assert second.options["cache"]["hits"] == B * L and second.options["cache"]["misses"] == 0
    assert second.options["grid_m"] == 9 and second.options["l_phi"] == 1.0
    for k in ("spectral_norm", "nuclear", "norm_21", "rank"):
        assert second.matrices[k].tolist() == first.matrices[k].tolist()


def _edit(model: Path, dest: Path, edits: dict[str, float]) -> Path:
    sd = load_file(str(model / "model.safetensors"))
    for name, scale in edits.items():
        sd[name] = sd[name] * scale
    return write_bert(dest, L=L, N=16, H=4, F=24, state=sd)


def test_changed_tensors_recompute_only_their_blocks(model, tmp_path):
    cache = tmp_path / "c"
    compute_spectra(open_weights(model), cache=cache)
    # "fine-tuned": layer 1's FF input matrix and layer 0's query projection changed
    tuned = _edit(model, tmp_path / "tuned", {
        "encoder.layer.1.intermediate.dense.weight": 1.5,
        "encoder.layer.0.attention.self.query.weight": 0.5,
    })
    w = open_weights(tuned)
    run = compute_spectra(w, cache=cache)
    assert run.cache_stats["misses"] == 2 and run.cache_stats["hits"] == B * L - 2
    _same_spectra(run, compute_spectra(w))
    # one changed layer (all of its tensors) recomputes exactly that layer's four blocks
    layer1 = _edit(model, tmp_path / "layer1", {
        f"encoder.layer.1.{n}.weight": 2.0 for n in (
            "attention.self.query", "attention.self.key", "attention.self.value",
            "attention.output.dense", "intermediate.dense", "output.dense")
    })
    run = compute_spectra(open_weights(layer1), cache=cache)
    assert run.cache_stats["misses"] == B and run.cache_stats["hits"] == B * (L - 1)


def test_corrupt_entries_are_detected_and_recomputed(model, tmp_path):
    cache = tmp_path / "c"
    w = open_weights(model)
    ref = compute_spectra(w, cache=cache)
    files = _entries(cache, spectra_only=True)
    # 1. truncated file
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])
    # 2. one byte of the payload flipped (parses fine, checksum does not match)
    raw = bytearray(files[1].read_bytes())
    raw[-3] ^= 0xFF
    files[1].write_bytes(bytes(raw))
    # 3. a valid entry of another key under this key's name
    files[2].write_bytes(files[3].read_bytes())
    # 4. valid checksum and key but impossible values (negative singular values)
    t = load_file(str(files[4]))
    from safetensors import safe_open

    with safe_open(str(files[4]), framework="pt") as f:
        md = f.metadata()
    t["values"] = -t["values"]
    from specbound.spectra.cache import _payload_checksum

    md["checksum"] = _payload_checksum(t)
    save_file(t, str(files[4]), metadata=md)
    # 5. not a safetensors file at all
    files[5].write_text("garbage")
    # 6. valid checksum and key but metadata of the wrong type
    t = load_file(str(files[6]))
    with safe_open(str(files[6]), framework="pt") as f:
        md = f.metadata()
    md["meta"] = json.dumps(["not", "a", "dict"])
    save_file(t, str(files[6]), metadata=md)
    run = compute_spectra(w, cache=cache)
    assert run.cache_stats["corrupt"] == 6
    assert run.cache_stats["misses"] == 6 and run.cache_stats["hits"] == B * L - 6
    _same_spectra(run, ref)  # never silently wrong
    again = compute_spectra(w, cache=cache)  # the corrupt entries were rewritten
    assert again.cache_stats["corrupt"] == 0 and again.cache_stats["hits"] == B * L


def test_options_are_part_of_the_key(model, tmp_path):
    cache = tmp_path / "c"
    w = open_weights(model)
    compute_spectra(w, cache=cache)
    assert compute_spectra(w, SpectraPolicy(dtype="float32"), cache=cache).cache_stats["misses"] == B * L
    # the FF method changes only the feed-forward blocks
    assert compute_spectra(w, SpectraPolicy(ff_method="svd"), cache=cache).cache_stats["misses"] == 2 * L
    dense = compute_spectra(w, SpectraPolicy(dense=True), cache=cache)
    assert dense.cache_stats["misses"] == B * L
    _same_spectra(dense, compute_spectra(w, SpectraPolicy(dense=True)))


def test_digest_sees_dtype_shape_and_bytes():
    a = torch.arange(6, dtype=torch.float32)
    assert tensor_digest(a) == tensor_digest(a.clone())
    assert tensor_digest(a) != tensor_digest(a.reshape(2, 3))
    assert tensor_digest(a) != tensor_digest(a.double())
    b = a.clone()
    b[3] += 1e-6
    assert tensor_digest(a) != tensor_digest(b)
    bf = torch.randn(4, 5).to(torch.bfloat16)
    assert tensor_digest(bf.T) == tensor_digest(bf.T.contiguous())  # layout-independent


def test_cache_path_that_is_a_file_is_a_clear_error(model, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        SpectraCache(f)


def test_cli_cache_option(model, tmp_path):
    from typer.testing import CliRunner

    from specbound.cli import app

    runner = CliRunner()
    for i in range(2):
        res = runner.invoke(app, ["analyze", str(model), "--out", str(tmp_path / f"r{i}"), "--no-plots",
                                  "--cache", str(tmp_path / "c")])
        assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert doc["options"]["cache"]["hits"] == B * L and doc["options"]["cache"]["misses"] == 0


def test_value_path_entries_are_validated_too(model, tmp_path):
    """A value-path link entry with a valid checksum but a negative norm is corrupt: recomputed."""
    from safetensors import safe_open

    from specbound.spectra.cache import _payload_checksum

    cache = tmp_path / "c"
    w = open_weights(model)
    ref = compute_spectra(w, cache=cache)
    vo = sorted(set(_entries(cache)) - set(_entries(cache, spectra_only=True)))
    assert len(vo) == L
    t = load_file(str(vo[0]))
    with safe_open(str(vo[0]), framework="pt") as f:
        md = f.metadata()
    t["link"] = -t["link"]
    md["checksum"] = _payload_checksum(t)
    save_file(t, str(vo[0]), metadata=md)
    run = compute_spectra(w, cache=cache)
    assert run.cache_stats["corrupt"] == 1 and run.cache_stats["misses"] == 1
    _same_spectra(run, ref)


def _rewrite_meta(p: Path, **changes) -> None:
    """Rewrite an entry's JSON metadata (the checksum covers the tensors only: still valid)."""
    from safetensors import safe_open

    t = load_file(str(p))
    with safe_open(str(p), framework="pt") as f:
        md = f.metadata()
    meta = json.loads(md["meta"])
    meta.update(changes)
    md["meta"] = json.dumps(meta)
    save_file(t, str(p), metadata=md)


def test_metadata_must_fit_the_run(model, tmp_path):
    """An entry whose metadata says float32 is never used by a float64 run, and a forged ``method``
    string never reaches the spectra (or report.json): both are corrupt, recomputed."""
    cache = tmp_path / "c"
    w = open_weights(model)
    ref = compute_spectra(w, cache=cache)
    files = _entries(cache, spectra_only=True)
    _rewrite_meta(files[0], dtype="float32")
    _rewrite_meta(files[1], methods=["<b>forged</b>"] * len(json.loads(
        __import__("safetensors").safe_open(str(files[1]), framework="pt").metadata()["meta"])["methods"]))
    _rewrite_meta(files[2], policy={"dtype": "float32"})
    run = compute_spectra(w, cache=cache)
    assert run.cache_stats["corrupt"] == 3 and run.cache_stats["misses"] == 3
    _same_spectra(run, ref)
    assert all("forged" not in m.method for *_, m in run.matrices())


def test_float32_and_float64_entries_never_mix(model, tmp_path):
    cache = tmp_path / "c"
    w = open_weights(model)
    compute_spectra(w, SpectraPolicy(dtype="float32"), cache=cache)
    run = compute_spectra(w, cache=cache)
    assert run.cache_stats["hits"] == 0
    assert all(m.values.dtype == torch.float64 for *_, m in run.matrices())


def test_obstacles_and_write_errors_bypass_the_cache_with_a_warning(model, tmp_path, monkeypatch):
    """A folder where an entry belongs, a file where its prefix folder belongs, ENOSPC and a
    SafetensorError while storing: the run completes (same spectra), each skipped entry is one
    warning line in the cache stats (report.json's options.cache.warnings), no traceback."""
    import errno

    from safetensors import SafetensorError

    import specbound.spectra.cache as cache_mod

    cache = tmp_path / "c"
    w = open_weights(model)
    ref = compute_spectra(w)
    cold = compute_spectra(w, cache=cache)
    files = _entries(cache)
    files[0].unlink()
    files[0].mkdir()  # a folder in the way of the entry
    prefix = files[1].parent
    for p in prefix.iterdir():
        p.unlink()
    prefix.rmdir()
    prefix.write_text("x")  # a file in the way of the prefix folder
    run = compute_spectra(w, cache=cache)
    _same_spectra(run, ref)
    warnings = run.cache_stats["warnings"]
    assert len(warnings) == run.cache_stats["misses"] >= 2
    assert all("\n" not in x and "cache entry not stored" in x for x in warnings)
    assert "warnings" not in cold.cache_stats

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    run = compute_spectra(w, cache=tmp_path / "c2")
    _same_spectra(run, ref)
    assert run.cache_stats["writes"] == 0 and len(run.cache_stats["warnings"]) == B * L
    assert "No space left on device" in run.cache_stats["warnings"][0]

    def bad(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28 })")

    monkeypatch.setattr("safetensors.torch.save_file", bad)
    run = compute_spectra(w, cache=tmp_path / "c3")
    assert len(run.cache_stats["warnings"]) == B * L and "serializing" in run.cache_stats["warnings"][0]
    assert not list((tmp_path / "c3").rglob(".tmp-*"))  # no temporary file left behind
    assert cache_mod.CACHE_FORMAT == 2


def test_stale_temporary_files_are_removed(model, tmp_path):
    """``.tmp-<pid>-*`` of a dead process older than an hour is removed on opening; one of a live
    process, or a recent one, is kept; a name without a pid goes by age alone."""
    import os
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = proc.pid
    d = tmp_path / "c" / f"v{CACHE_FORMAT}" / "ab"
    d.mkdir(parents=True)
    old = time.time() - 7200
    paths = {name: d / name for name in (f".tmp-{dead}-aa", f".tmp-{os.getpid()}-bb", f".tmp-{dead}-cc", ".tmp-k3j2l1",
                                         "entry.safetensors")}
    for name, p in paths.items():
        p.write_bytes(b"partial")
        if not name.endswith("-cc"):
            os.utime(p, (old, old))
    c = SpectraCache(tmp_path / "c")
    assert c.stats.removed_tmp == 2
    assert not paths[f".tmp-{dead}-aa"].exists() and not paths[".tmp-k3j2l1"].exists()  # old mkstemp name
    assert all(paths[n].exists() for n in (f".tmp-{os.getpid()}-bb", f".tmp-{dead}-cc", "entry.safetensors"))
