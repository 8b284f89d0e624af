"""Approximate mode against exact spectra: error within the reported estimate in ≥ 90% of
seeded trials, tight on low-rank matrices; the report's error columns and notes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import specbound
from specbound.errors import InputError
from specbound.spectra.approx import APPROX_NOTE, ERROR_COLUMNS, ApproxOptions, ApproxSpectrum, approx_spectrum

from builders import write_bert

OPTS = dict(min_dim=0, block=6, block_steps=5, probes=12, steps=30)


def _matrix(kind: str, seed: int, n: int = 240, m: int = 560) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        return torch.randn(n, m, generator=g, dtype=torch.float64) / math.sqrt(m)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64))
    decay = {"power": 1.0, "slow": 0.5}[kind]
    sig = torch.arange(1, n + 1, dtype=torch.float64) ** -decay
    M = U @ torch.diag(sig) @ V.T
    return M if seed % 2 else M.T.contiguous()  # both orientations (Gram on either side)


def test_error_within_estimate_in_90_percent_of_seeded_trials():
    trials = hits = 0
    for kind in ("gauss", "power", "slow"):
        for seed in range(6):
            M = _matrix(kind, seed)
            a = approx_spectrum(M, ApproxOptions(seed=seed, **OPTS))
            assert isinstance(a, ApproxSpectrum) and a.method == "slq"
            s = torch.linalg.svdvals(M)
            assert a.values.numel() == min(M.shape)
            checks = [abs(float(a.values[0] - s[0])) <= a.sigma1_err]
            for p in (0.1, 0.5, 1.0, 2.0):
                est, err = a.schatten(p)
                checks.append(abs(est - float((s**p).sum())) <= err)
            trials += len(checks)
            hits += sum(checks)
            # the estimates are useful, not just covered: relative errors below a few percent
            assert abs(float(a.values[0] / s[0]) - 1) < 1e-3
            est, _ = a.schatten(1.0)
            assert abs(est / float(s.sum()) - 1) < 0.05
    assert hits >= 0.9 * trials, f"{hits}/{trials} within the reported error"


@pytest.mark.parametrize("rank", [1, 7, 25])
def test_low_rank_is_exact_and_the_estimate_says_so(rank):
    g = torch.Generator().manual_seed(rank)
    M = torch.randn(300, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, 700, generator=g, dtype=torch.float64)
    a = approx_spectrum(M, ApproxOptions(**OPTS))
    s = torch.linalg.svdvals(M)
    exact = s[:rank]
    np.testing.assert_allclose(a.values[:rank].numpy(), exact.numpy(), rtol=1e-10)
    assert torch.count_nonzero(a.values[rank:]) == 0  # the exact zeros, no noise
    assert a.sigma1_err <= 1e-12 * float(s[0])
    for p in (0.05, 1.0, 2.0):
        est, err = a.schatten(p)
        ref = float((exact**p).sum())
        assert abs(est - ref) <= 1e-9 * ref
        assert err <= 1e-8 * ref  # tight


def test_small_matrices_take_the_exact_route():
    M = torch.randn(40, 90, dtype=torch.float64)
    a = approx_spectrum(M, ApproxOptions())  # min_dim 512
    assert not isinstance(a, ApproxSpectrum) and a.method in ("gram", "svd")


def test_zero_matrix():
    a = approx_spectrum(torch.zeros(200, 300, dtype=torch.float64), ApproxOptions(**OPTS))
    assert torch.count_nonzero(a.values) == 0 and a.schatten(1.0) == (0.0, 0.0)


def test_analyze_approx_reports_errors_and_notes(tmp_path):
    ckpt = write_bert(tmp_path / "m", L=2, N=64, H=4, F=160, seed=1)
    opts = ApproxOptions(min_dim=0, block=4, block_steps=3, probes=8, steps=16)
    rep = specbound.analyze(ckpt, approx=opts, bounds="spectrum_adaptive,edelman")
    exact = specbound.analyze(ckpt, bounds="spectrum_adaptive,edelman")
    m = rep.matrices
    assert set(ERROR_COLUMNS) <= set(m.columns)
    ff = m[m.kind.isin(["M_in", "M_out"])]
    assert (ff.method == "slq").all()
    assert (m[m.kind.isin(["QK", "OV"])][ERROR_COLUMNS] == 0).all().all()  # exact per-head spectra
    for c in ERROR_COLUMNS:
        assert np.isfinite(m[c].to_numpy(dtype=float)).all() and (m[c] >= 0).all()
    # reported spectral norms against the exact ones, within the reported error
    ex = exact.matrices[exact.matrices.kind.isin(["M_in", "M_out"])]
    diff = np.abs(ff.spectral_norm.to_numpy() - ex.spectral_norm.to_numpy())
    assert (diff <= ff.spectral_norm_err.to_numpy() + 1e-12).all()
    for b in rep.bounds.values():
        assert APPROX_NOTE in b.notes
    assert abs(rep.bounds["spectrum_adaptive"].log10_value - exact.bounds["spectrum_adaptive"].log10_value) < 0.05
    assert rep.options["approx"]["probes"] == 8
    json.dumps(rep.to_dict(), allow_nan=False)  # no NaN/inf in the report


def test_approx_and_dense_exclude_each_other(tmp_path):
    ckpt = write_bert(tmp_path / "m")
    with pytest.raises(InputError, match="exclude"):
        specbound.analyze(ckpt, approx=True, dense=True)
