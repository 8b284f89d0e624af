"""Bounded memory (issue 18): feed-forward Gram matrices accumulated block by block, and the
memory budget of the concurrent block tasks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import specbound
from specbound.spectra import blocks as blocks_mod
from specbound.spectra.blocks import Dense
from specbound.spectra.compute import MemoryBudget, SpectraPolicy
from specbound.spectra.kernels import GRAM_TOLERANCE, gram_accepted, gram_blocked, gram_blocked_l1, gram_eigenvalues

from builders import build


def _guarded(lam: torch.Tensor, n: int) -> torch.Tensor:
    """The eigenvalues above the Gram route's accuracy floor n·ε·λ_max / (2·tol)."""
    floor = n * torch.finfo(torch.float64).eps * float(lam[0]) / (2 * GRAM_TOLERANCE[torch.float64])
    return lam[lam >= floor]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_blockwise_gram_of_gated_mlps_equals_the_concatenated_one(family, tmp_path):
    """M_in = [W_gate | W_up] of every gated-MLP family: the blockwise Gram (blocks of a few
    columns, so gate and up are never upcast together) against the whole upcast matrix."""
    model = build(family, seed=1)
    model.save_pretrained(tmp_path)
    lw = specbound.open_weights(tmp_path).layer(0)
    for M in (lw.M_in, lw.M_out):
        M64 = M.double()
        ref = gram_eigenvalues(M64)
        lam, n21, l1 = gram_blocked(M, torch.float64, torch.device("cpu"), block_bytes=min(M.shape) * 8 * 5)
        keep = _guarded(ref, min(M.shape))
        np.testing.assert_allclose(lam[: keep.numel()].numpy(), keep.numpy(), rtol=1e-12)
        assert n21 == pytest.approx(float(torch.linalg.vector_norm(M64, dim=0).sum()), rel=1e-12)
        assert l1 == pytest.approx(float(M64.abs().sum()), rel=1e-12)
        assert gram_blocked_l1(M, torch.float64, torch.device("cpu"), block_bytes=64) == pytest.approx(l1, rel=1e-12)


def test_blocked_route_through_analyze_gives_the_same_report(tmp_path, monkeypatch):
    """With the whole-upcast threshold at 0 every feed-forward matrix takes the blocked route:
    the same numbers to 1e-12 (another order of additions)."""
    build("llama", seed=2).save_pretrained(tmp_path)
    whole = specbound.analyze(tmp_path)
    monkeypatch.setattr(blocks_mod, "FULL_UPCAST_BYTES", 0)
    monkeypatch.setattr(blocks_mod, "BLOCK_BYTES", 32 * 8 * 7)  # a few columns per block
    blocked = specbound.analyze(tmp_path)
    for col in ("spectral_norm", "frobenius", "nuclear", "norm_21", "stable_rank", "effective_rank"):
        np.testing.assert_allclose(blocked.matrices[col].to_numpy(float), whole.matrices[col].to_numpy(float),
                                   rtol=1e-12)
    for name, b in whole.bounds.items():
        assert blocked.bounds[name].log10_value == pytest.approx(b.log10_value, rel=1e-12), name


def test_blocked_route_falls_back_to_the_whole_svd_and_says_so(monkeypatch):
    """σ from 1 to 1e-9: the guard refuses the Gram route; the SVD of the whole matrix is taken and
    the method column says so."""
    g = torch.Generator().manual_seed(0)
    n = 30
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(3 * n, n, generator=g, dtype=torch.float64))
    sig = torch.logspace(0, -9, n, dtype=torch.float64)
    M = U @ torch.diag(sig) @ V.T
    monkeypatch.setattr(blocks_mod, "FULL_UPCAST_BYTES", 0)
    monkeypatch.setattr(blocks_mod, "BLOCK_BYTES", n * 8 * 10)
    (spec,) = Dense("m_in", "M_in", M).compute(SpectraPolicy()).spectra
    assert spec.method == "svd (full matrix)"
    assert float(((spec.values - sig) / sig).abs().max()) < 1e-5
    assert not gram_accepted(gram_eigenvalues(M), torch.float64)


def test_memory_budget_serialises_tasks_that_do_not_fit_together():
    budget = MemoryBudget(100)
    running, most = [0], [0]
    lock = threading.Lock()

    def task(n: int) -> None:
        with budget.reserve(n):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=task, args=(60,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and budget.peak == 60 and budget.used == 0  # 60 + 60 > 100: one at a time
    small = MemoryBudget(100)
    with small.reserve(40), small.reserve(40):
        assert small.used == 80  # two fit side by side
    big = MemoryBudget(10)
    with big.reserve(50):  # larger than the whole budget: runs alone, never deadlocks
        assert big.used == 50


def test_max_memory_option_is_checked():
    with pytest.raises(specbound.InputError, match="max_memory"):
        SpectraPolicy.of(max_memory=0)
    assert SpectraPolicy.of(max_memory=2**30).max_memory == 2**30


def test_max_memory_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from specbound.cli import app

    from builders import write_bert

    ckpt = write_bert(tmp_path / "m")
    r = CliRunner().invoke(app, ["analyze", str(ckpt), "--out", str(tmp_path / "r"), "--no-plots", "--max-memory", "1.5G"])
    assert r.exit_code == 0, r.output
    import json

    assert json.loads((tmp_path / "r" / "report.json").read_text())["options"]["max_memory"] == int(1.5 * 2**30)
    r = CliRunner().invoke(app, ["analyze", str(ckpt), "--out", str(tmp_path / "r2"), "--max-memory", "lots"])
    assert r.exit_code == 2 and "--max-memory" in r.output
