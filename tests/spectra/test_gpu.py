"""CUDA path equals the CPU path within the documented tolerance (README, "Scale"): float64
rtol 1e-10 of σ_1, float32 rtol 1e-4 of σ_1. Skipped without a CUDA device (CI is CPU)."""

from __future__ import annotations

import pytest
import torch

from specbound.spectra.approx import ApproxOptions
from specbound.spectra.compute import SpectraPolicy, compute_spectra
from specbound.weights.adapters import open_weights

from builders import write_bert

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TOL = {"float64": 1e-10, "float32": 1e-4}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dense", [False, True])
def test_cuda_equals_cpu(tmp_path, dtype, dense):
    w = open_weights(write_bert(tmp_path / "m", L=2, N=48, H=4, F=96, seed=2))
    cpu = compute_spectra(w, SpectraPolicy(dtype=dtype, device="cpu", dense=dense))
    gpu = compute_spectra(w, SpectraPolicy(dtype=dtype, device="cuda", dense=dense))
    for (_, _, _, a), (_, _, _, b) in zip(cpu.matrices(), gpu.matrices()):
        assert b.values.device.type == "cpu" and b.values.dtype == a.values.dtype
        scale = float(a.values.max()) if a.values.numel() else 1.0
        torch.testing.assert_close(b.values, a.values, rtol=0, atol=TOL[dtype] * scale)
        assert b.norm_21 == pytest.approx(a.norm_21, rel=TOL[dtype])


def test_cuda_cache_and_approx(tmp_path):
    w = open_weights(write_bert(tmp_path / "m", L=1, N=64, H=4, F=160, seed=2))
    opts = ApproxOptions(min_dim=0, block=4, block_steps=3, probes=8, steps=16)
    cpu = compute_spectra(w, SpectraPolicy(device="cpu", approx=opts))
    gpu = compute_spectra(w, SpectraPolicy(device="cuda", approx=opts), cache=tmp_path / "c")
    for (_, _, _, a), (_, _, _, b) in zip(cpu.matrices(), gpu.matrices()):
        assert abs(float(a.values[0] - b.values[0])) <= 1e-6 * float(a.values[0])
