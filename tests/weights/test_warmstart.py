"""The CLI's warm start (specbound/warmstart.py): which tensors it plans, that the analysis uses its
eigenvalues only for exactly those tensors, and that the results are bit-identical to an analysis
without it; it never fails on bad input (the analysis reports that) and imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import FAMILIES, L, build

import specbound
from specbound.errors import InputError
from specbound.warmstart import FF_TENSORS, WarmStart
from specbound.weights.adapters import open_weights


@pytest.fixture(autouse=True)
def _close_warm_starts(monkeypatch):
    """Every warm start of a test is closed after it (it limits numpy's BLAS until then)."""
    started = []
    start = WarmStart.start

    def tracked(self):
        started.append(self)
        return start(self)

    monkeypatch.setattr(WarmStart, "start", tracked)
    yield
    for w in started:
        w.close()


def _spectra(rep) -> list[torch.Tensor]:
    return [m.values for *_, m in rep.model_spectra.matrices()]


def _same_report(a, b) -> None:
    sa, sb = _spectra(a), _spectra(b)
    assert len(sa) == len(sb)
    assert all(torch.equal(x, y) for x, y in zip(sa, sb, strict=True))  # bit-identical
    assert {k: v.log10_value for k, v in a.bounds.items()} == {k: v.log10_value for k, v in b.bounds.items()}
    assert a.matrices.equals(b.matrices)


def _single_tensor_ff_names(folder: Path) -> set[str]:
    """The feed-forward matrices the adapter builds from one stored tensor (LLaMA's M_in is two)."""
    w = open_weights(folder)
    return {n for i in range(w.info.n_layers) for k, n in w.layer(i).names.items()
            if k in ("M_in", "M_out") and " | " not in n}


@pytest.mark.parametrize(
    "family,task", [(f, False) for f in FAMILIES] + [(f, True) for f in ("bert", "distilbert", "gpt2", "llama")]
)
def test_plan_is_the_adapters_feed_forward_tensors_and_results_are_bit_identical(saved, family, task):
    _, folder = saved(family, task=task)
    warm = WarmStart(folder).start()
    warm.join()  # every planned matrix, deterministically
    assert set(warm.planned) == _single_tensor_ff_names(folder), warm.why_not
    assert len(warm.results) == len(warm.planned) == (L if "llama" in family or family in ("mistral", "qwen2") else 2 * L)
    with_warm = specbound.analyze(folder, warm_start=warm)
    assert with_warm.options["warm_start"] == {"planned": len(warm.planned), "computed": len(warm.planned),
                                               "used": len(warm.planned)}
    _same_report(with_warm, specbound.analyze(folder))


def test_every_model_type_with_names_has_an_adapter():
    from specbound.weights.adapters import supported_model_types

    assert set(FF_TENSORS) <= set(supported_model_types())


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bf16_checkpoint_and_float32_working_dtype(tmp_path, family, dtype):
    build(family, seed=7).to(torch.bfloat16).save_pretrained(tmp_path)
    warm = WarmStart(tmp_path, dtype=dtype).start()
    warm.join()
    assert warm.results
    rep = specbound.analyze(tmp_path, dtype=dtype, warm_start=warm)
    assert rep.options["warm_start"]["used"] == len(warm.planned) > 0
    assert all(str(v.dtype) == dtype for v in warm.results.values())
    _same_report(rep, specbound.analyze(tmp_path, dtype=dtype))


def test_not_used_for_another_dtype_or_a_file_changed_since(tmp_path, saved):
    _, src = saved("bert")
    folder = tmp_path / "m"
    folder.mkdir()
    for f in ("config.json", "model.safetensors"):
        (folder / f).write_bytes((src / f).read_bytes())
    warm = WarmStart(folder, dtype="float32").start()
    warm.join()
    rep = specbound.analyze(folder, dtype="float64", warm_start=warm)  # the working dtype differs
    assert rep.options["warm_start"]["used"] == 0
    _same_report(rep, specbound.analyze(folder))
    warm = WarmStart(folder).start()
    warm.join()
    st = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "rewritten"
    rep = specbound.analyze(folder, warm_start=warm)
    assert rep.options["warm_start"]["used"] == 0
    _same_report(rep, specbound.analyze(folder))


def test_stopped_part_way_the_analysis_computes_the_rest(saved):
    _, folder = saved("gpt2")
    warm = WarmStart(folder)
    first = next(iter(warm.planned))
    warm.planned = {first: warm.planned[first], **{k: v for k, v in warm.planned.items() if k != first}}
    warm._stop.set()  # stopped before it starts: nothing computed
    warm.start()
    warm.join()
    rep = specbound.analyze(folder, warm_start=warm)
    assert rep.options["warm_start"] == {"planned": 2 * L, "computed": 0, "used": 0}
    _same_report(rep, specbound.analyze(folder))


def test_never_fails_on_bad_input_and_the_analysis_reports_it(tmp_path, saved):
    # a corrupt file: the warm start plans nothing and says why; the analysis raises its clear error
    _, src = saved("bert")
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    warm = WarmStart(tmp_path).start()
    warm.join()
    assert warm.planned == {} and warm.why_not
    with pytest.raises(InputError, match="model.safetensors"):
        specbound.analyze(tmp_path, warm_start=warm)
    # no checkpoint at all, an unknown model_type, a working dtype it does not handle
    assert WarmStart(tmp_path / "missing").planned == {}
    cfg = json.loads((src / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "t5"}))
    (other / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    w = WarmStart(other)
    assert w.planned == {} and "model_type" in w.why_not
    assert WarmStart(src, dtype="bfloat16").planned == {}
    # config given explicitly (as --config does) wins over the folder's
    assert len(WarmStart(other, config=src / "config.json").planned) == 2 * L


def test_imports_no_torch(saved):
    _, folder = saved("bert")
    code = ("import sys; from specbound.warmstart import WarmStart; "
            f"w = WarmStart({str(folder)!r}).start(); w.close(); "
            "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'imported'; print(len(w.planned))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(2 * L)


def test_stopped_while_computing_the_matrix_in_progress_is_finished_and_waited_for(minilm_path):
    """stop() does not wait; the matrix in progress is finished in the background and a lookup of
    it waits for it; no further matrix is started. close() restores numpy's BLAS threads and the
    switch interval."""
    import time

    from threadpoolctl import threadpool_info

    def blas() -> list[int]:
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    before, interval = blas(), sys.getswitchinterval()
    warm = WarmStart(minilm_path)  # 384 x 1536 matrices: long enough to be caught on one
    warm.start()
    assert all(n == 1 for n in blas())
    deadline = time.monotonic() + 30
    while warm._current is None and time.monotonic() < deadline:  # wait until it is on a matrix
        time.sleep(0.0002)
    with warm._cond:
        current, done = warm._current, len(warm.results)
        warm.stop()
    if current is None:
        pytest.skip("the thread finished every matrix before it could be stopped")
    t = warm.planned[current]
    lam = warm.eigenvalues(current, t.shape, t.dtype, "float64")  # waits for it
    assert lam is not None and len(warm.results) == done + 1
    warm.join()
    assert len(warm.results) == done + 1  # nothing started after stop()
    assert sys.getswitchinterval() == interval
    warm.close()
    assert blas() == before
