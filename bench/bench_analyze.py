"""Benchmark: whole-process `specbound analyze` against the dense per-head procedure and WeightWatcher.

Builds a BERT-base-shaped checkpoint (12 layers, N = 768, 12 heads, d_ff = 3072, random
float32 weights, safetensors) in a temporary folder, then times, each as its own process:

* ``specbound analyze CKPT`` (factored per-head spectra, Gram-route feed-forward spectra);
* the dense per-head procedure (the published one): load the checkpoint, form every N × N
  product QK and OV in float64, take its dense SVD, set the singular values past the head's rank
  to zero, take dense SVDs of the feed-forward matrices, then evaluate B_SA and B_E with the same
  formulas;
* ``weightwatcher`` 0.7.7's ``WeightWatcher(model=CKPT).analyze()`` with its defaults (it reads the
  same safetensors folder; per-weight ESDs and power-law fits, no per-head QK/OV spectra), when
  it is installed (it is not a dependency: ``pip install weightwatcher==0.7.7``); otherwise that
  comparison is skipped with a message;
* the floor: the bare linear-algebra kernels the analysis runs (batched thin QR of the factors,
  batched core SVDs, feed-forward Gram products and their eigenvalues through
  ``spectra.core.gram_eigenvalues``, i.e. numpy ``syrk`` + ``eigvalsh`` on the CPU) on weights
  already in memory in float64, in a process of its own; once one call after the other with all
  threads per call (``floor_kernels_s``), once scheduled as specbound schedules them (four tasks
  per layer on worker threads with one torch and one BLAS thread each: ``floor_kernels_tasks_s``).
  ``*_over_floor`` divide by the smaller of the two.

Each contender runs ``--repeats`` times (default 3), interleaved (specbound, dense, WeightWatcher,
then again), so that a burst of load on the machine hits all of them; the ratios are of the
medians and of the fastest runs (noise only adds time), and every run is listed. Load is included for every contender. It reports wall times,
their ratios, peak RSS of each process (``os.wait4``: that child only, the largest over the
runs), the load average before and after, and the relative difference of B_SA and B_E between
specbound and the dense procedure. The dense procedure uses torch.linalg (MKL in the torch CPU
wheels), specbound's feed-forward route numpy's BLAS/LAPACK (OpenBLAS in the numpy wheels).
Usage: ``python bench/bench_analyze.py [--layers 12] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_checkpoint(folder: Path, L: int, N: int, H: int, F: int, seed: int = 0) -> Path:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            sd[p + name + ".weight"] = torch.randn(N, N, generator=g) * 0.04
            sd[p + name + ".bias"] = torch.zeros(N)
        sd[p + "intermediate.dense.weight"] = torch.randn(F, N, generator=g) * 0.04
        sd[p + "output.dense.weight"] = torch.randn(N, F, generator=g) * 0.02
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"))
    cfg = {"model_type": "bert", "num_hidden_layers": L, "hidden_size": N, "num_attention_heads": H,
           "intermediate_size": F, "hidden_act": "gelu"}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def dense_worker(ckpt: Path, out_json: Path) -> None:
    """The dense per-head procedure, run in its own process."""
    import torch
    from safetensors.torch import load_file

    from specbound.bounds import BoundInput, BoundParams, available_bounds
    from specbound.measures import MatrixTable
    from specbound.spectra.spectrum import LayerSpectra, MatrixSpectrum, ModelSpectra
    from specbound.weights.canonical import ModelInfo

    cfg = json.loads((ckpt / "config.json").read_text())
    L, N, H, F = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]
    dh = N // H
    sd = load_file(str(ckpt / "model.safetensors"))
    layers = []
    for i in range(L):
        p = f"encoder.layer.{i}."
        q, k, v, o = (sd[p + n + ".weight"].double() for n in
                      ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"))
        qk, ov = [], []
        for h in range(H):
            hs = slice(h * dh, (h + 1) * dh)
            for prod, dest in ((q[hs].T @ k[hs], qk), (v[hs].T @ o.T[hs], ov)):
                s = torch.linalg.svdvals(prod)
                s[dh:] = 0.0  # past the head's rank: exact zeros
                dest.append(MatrixSpectrum(s, N, N, float(prod.norm(dim=0).sum()), "dense"))
        m_in = sd[p + "intermediate.dense.weight"].double().T
        m_out = sd[p + "output.dense.weight"].double().T
        layers.append(LayerSpectra(
            i, qk, ov,
            MatrixSpectrum(torch.linalg.svdvals(m_in), N, F, float(m_in.norm(dim=0).sum()), "svd"),
            MatrixSpectrum(torch.linalg.svdvals(m_out), F, N, float(m_out.norm(dim=0).sum()), "svd"),
        ))
    ms = ModelSpectra(ModelInfo("bert", L, N, H, H, dh, F, source=str(ckpt)), layers, dense=True)
    params = BoundParams()
    inp = BoundInput(ms.info, MatrixTable.build(ms, l_phi=params.l_phi), ms)
    res = {name: b.evaluate(inp, params).log10_value for name, b in available_bounds().items()
           if name in ("spectrum_adaptive", "edelman")}
    out_json.write_text(json.dumps(res))


def ww_worker(ckpt: Path) -> None:
    """WeightWatcher 0.7.7 on the same folder, defaults (load included)."""
    import logging

    import weightwatcher as ww

    logging.disable(logging.INFO)
    details = ww.WeightWatcher(model=str(ckpt)).analyze()
    assert len(details) > 0


def _layer_mats(sd: dict, i: int, N: int, H: int, dh: int) -> tuple:
    """Layer ``i`` of a BERT state dict as (W_Q, W_K, W_V [H, N, d_h], W_O^T [H, N, d_h], M_in, M_out)."""
    p = f"encoder.layer.{i}."
    q, k, v, o = (sd[p + n + ".weight"] for n in
                  ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"))
    heads = lambda w: w.T.reshape(N, H, dh).permute(1, 0, 2).contiguous()  # noqa: E731
    WoT = o.reshape(N, H, dh).permute(1, 0, 2).contiguous()
    return (heads(q), heads(k), heads(v), WoT, sd[p + "intermediate.dense.weight"].T.contiguous(),
            sd[p + "output.dense.weight"].T.contiguous())


def floor_worker(ckpt: Path, out_json: Path) -> None:
    """Bare kernels of the factored analysis on resident float64 weights (load not timed)."""
    import torch
    from safetensors.torch import load_file

    from specbound.spectra.kernels import gram_eigenvalues, top_singular_value

    cfg = json.loads((ckpt / "config.json").read_text())
    L, N, H = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]
    dh = N // H
    sd = {k: v.double() for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    total = 0.0
    for i in range(L):
        Wq, Wk, Wv, WoT, m_in, m_out = _layer_mats(sd, i, N, H, dh)
        t = time.perf_counter()
        Rq, Rk, Rv, Ro = (torch.linalg.qr(X, mode="r").R for X in (Wq, Wk, Wv, WoT))
        torch.linalg.svdvals(Rq @ Rk.mT)
        torch.linalg.svdvals(Rv @ Ro.mT)
        gram_eigenvalues(m_in)
        gram_eigenvalues(m_out)
        # the value-path link VO = W_V W_O: one GEMM and Lanczos σ_1
        top_singular_value(Wv.permute(1, 0, 2).reshape(N, -1) @ WoT.permute(1, 0, 2).reshape(N, -1).mT)
        total += time.perf_counter() - t
    total_tasks = _floor_tasks(sd, L, N, H, dh)
    out_json.write_text(json.dumps({"floor_s": total, "floor_tasks_s": total_tasks}))


def _floor_tasks(sd: dict, L: int, N: int, H: int, dh: int) -> float:
    """The kernels specbound runs, scheduled as it schedules them (spectra/compute.py ``task_threads``):
    per layer four tasks (QK, OV, M_in, M_out) on ``n`` worker threads with one torch thread and
    one numpy BLAS thread each; the feed-forward spectra through ``gram_eigenvalues`` (numpy
    ``syrk`` + ``eigvalsh`` on the CPU), the products through the QR cores."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from specbound.spectra.kernels import gram_eigenvalues
    from specbound.spectra.kernels import blas_threads

    n = torch.get_num_threads()
    if n < 2:
        return float("nan")
    torch.set_num_threads(1)

    from specbound.spectra.kernels import top_singular_value

    def pair(A, B):
        Ra, Rb = (torch.linalg.qr(X, mode="r").R for X in (A, B))
        return torch.linalg.svdvals(Ra @ Rb.mT)

    def value_path(A, B):  # VO = W_V W_O of the layer chain: one GEMM and Lanczos σ_1
        return top_singular_value(A.permute(1, 0, 2).reshape(A.shape[1], -1) @ B.permute(1, 0, 2).reshape(B.shape[1], -1).mT)

    total = 0.0
    with blas_threads(1), ThreadPoolExecutor(min(n, 4)) as ex:
        for i in range(L):
            Wq, Wk, Wv, WoT, m_in, m_out = _layer_mats(sd, i, N, H, dh)
            t = time.perf_counter()
            futs = [ex.submit(gram_eigenvalues, m_in), ex.submit(gram_eigenvalues, m_out),
                    ex.submit(pair, Wq, Wk), ex.submit(pair, Wv, WoT), ex.submit(value_path, Wv, WoT)]
            for f in futs:
                f.result()
            total += time.perf_counter() - t
    torch.set_num_threads(n)
    return total


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of one child process (``os.wait4``: that child only)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    errtext = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {errtext[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ff", type=int, default=3072)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each contender (median reported)")
    ap.add_argument("--dense-worker", nargs=2, metavar=("CKPT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--ww-worker", metavar="CKPT", help=argparse.SUPPRESS)
    ap.add_argument("--floor-worker", nargs=2, metavar=("CKPT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--build-worker", metavar="CKPT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_worker:
        make_checkpoint(Path(args.build_worker), args.layers, args.hidden, args.heads, args.ff)
        return
    if args.dense_worker:
        dense_worker(Path(args.dense_worker[0]), Path(args.dense_worker[1]))
        return
    if args.ww_worker:
        ww_worker(Path(args.ww_worker))
        return
    if args.floor_worker:
        floor_worker(Path(args.floor_worker[0]), Path(args.floor_worker[1]))
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # built in a child process: a child's peak RSS starts from its parent's at fork time, so
        # this process must stay small for the measurements below to be the children's own
        ckpt = tmp / "ckpt"
        subprocess.run([sys.executable, __file__, "--build-worker", str(ckpt), "--layers", str(args.layers),
                        "--hidden", str(args.hidden), "--heads", str(args.heads), "--ff", str(args.ff)], check=True)
        size_mb = (ckpt / "model.safetensors").stat().st_size / 2**20
        specbound = str(Path(sys.executable).with_name("specbound"))
        try:
            import importlib.metadata as md

            ww_version = md.version("weightwatcher")
        except Exception:
            ww_version = None
            print("weightwatcher is not installed: skipping that comparison "
                  "(pip install weightwatcher==0.7.7 to run it).", file=sys.stderr)
        contenders = {
            # the real CLI, as a user runs it (no plots: the plots are not the analysis)
            "specbound": [specbound, "analyze", str(ckpt), "--out", str(tmp / "rep"), "--no-plots"],
            "dense": [sys.executable, __file__, "--dense-worker", str(ckpt), str(tmp / "dense.json")],
        }
        if ww_version is not None:
            contenders["weightwatcher"] = [sys.executable, __file__, "--ww-worker", str(ckpt)]
        runs: dict[str, list[float]] = {k: [] for k in contenders}
        rss: dict[str, float] = {k: 0.0 for k in contenders}
        for _ in range(max(1, args.repeats)):  # interleaved: a burst of load hits every contender
            for name, cmd in contenders.items():
                wall, peak = timed(cmd)
                runs[name].append(round(wall, 2))
                rss[name] = max(rss[name], peak)
        med = {k: statistics.median(v) for k, v in runs.items()}
        t_fac_plots, _ = timed([specbound, "analyze", str(ckpt), "--out", str(tmp / "rep2")])
        timed([sys.executable, __file__, "--floor-worker", str(ckpt), str(tmp / "floor.json")])
        floors = json.loads((tmp / "floor.json").read_text())
        floor, floor_tasks = floors["floor_s"], floors.get("floor_tasks_s", float("nan"))
        floor_min = min(floor, floor_tasks) if floor_tasks == floor_tasks else floor
        fac = json.loads((tmp / "rep" / "report.json").read_text())
        dense = json.loads((tmp / "dense.json").read_text())
        rows = {
            "shape": f"L={args.layers} N={args.hidden} H={args.heads} d_ff={args.ff} ({size_mb:.0f} MB fp32)",
            "cpu_threads": os.cpu_count(),
            "repeats": max(1, args.repeats),
            "specbound_analyze_s": round(med["specbound"], 2),
            "specbound_analyze_runs_s": runs["specbound"],
            "specbound_analyze_with_plots_s": round(t_fac_plots, 2),
            "dense_per_head_s": round(med["dense"], 2),
            "dense_per_head_runs_s": runs["dense"],
            "speedup": round(med["dense"] / med["specbound"], 1),
            # noise on a shared machine only adds time: the ratio of the fastest runs as well
            "speedup_fastest_runs": round(min(runs["dense"]) / min(runs["specbound"]), 1),
            "peak_rss_specbound_MB": round(rss["specbound"]),
            "peak_rss_dense_MB": round(rss["dense"]),
            # the analysis after start-up (imports excluded)
            "analysis_only_s": round(fac["elapsed_s"], 2),
            "floor_kernels_s": round(floor, 2),
            "floor_kernels_tasks_s": round(floor_tasks, 2),
            "analysis_over_floor": round(fac["elapsed_s"] / floor_min, 2),
            "process_over_floor": round(med["specbound"] / floor_min, 2),
        }
        if ww_version is not None:
            rows.update({
                "weightwatcher_version": ww_version,
                "weightwatcher_analyze_s": round(med["weightwatcher"], 2),
                "weightwatcher_analyze_runs_s": runs["weightwatcher"],
                "peak_rss_weightwatcher_MB": round(rss["weightwatcher"]),
                "speedup_vs_weightwatcher": round(med["weightwatcher"] / med["specbound"], 1),
                "speedup_vs_weightwatcher_fastest_runs": round(min(runs["weightwatcher"]) / min(runs["specbound"]), 1),
            })
        rows["load_average_before"] = load_before
        rows["load_average_after"] = os.getloadavg()
        for name in ("spectrum_adaptive", "edelman"):
            a, b = fac["bounds"][name]["log10_value"], dense[name]
            rows[f"{name}_log10"] = a
            rows[f"{name}_rel_diff"] = abs(10 ** (a - b) - 1)
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
