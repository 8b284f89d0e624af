"""Benchmark at scale: a 1.1B-parameter LLaMA-shaped bf16 checkpoint in bounded memory.

Builds (random weights, written shard by shard with ``safetensors.torch.save_file`` and a
``model.safetensors.index.json``, no transformers) a LLaMA-shaped checkpoint: N = 2048,
22 layers, 32 query heads, 4 KV heads, d_ff = 5632, vocabulary 32000, ~500 MB shards
(1.1B parameters, 2.2 GB in bf16), in a temporary folder that is deleted afterwards. Then, each
as its own process (wall time and peak RSS from ``wait4``):

* ``specbound analyze CKPT --no-plots`` (factored, float64, one layer resident);
* the same with ``--cache DIR`` twice (cold, then warm: no linear algebra on the warm run);
* the dense per-head procedure on ``--dense-layers`` layers (form every N × N product QK/OV in
  float64, dense SVD, dense SVD of the feed-forward matrices), extrapolated linearly to all
  layers (each layer costs the same);
* the floor: the bare linear-algebra kernels the analysis needs on the same layers (batched thin
  QR of the factors, batched core SVDs, feed-forward Gram matrices and their eigh), with the
  weights already in memory in float64, extrapolated to all layers.

``--shape 7b`` builds the LLaMA-2-7B shape instead (32 layers, N = 4096, d_ff = 11008, 13.5 GB
in 1 GB shards, generated a shard at a time) and ``--compare-float32`` adds a ``--dtype float32``
run with the largest relative difference of every bound and per-matrix measure against float64.

Usage: ``python bench/bench_scale.py [--shape 1b|7b] [--layers L] [--dense-layers 2] [--keep DIR]
[--compare-float32] [--skip-dense] [--skip-cache] [--skip-floor] [--approx-sizes '']``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLAMA_1B = {"L": 22, "N": 2048, "H": 32, "H_kv": 4, "F": 5632, "V": 32000}
#: LLaMA-2-7B: 32 layers, N = 4096, 32 heads (no GQA), d_ff = 11008 (13.5 GB in bf16)
LLAMA_7B = {"L": 32, "N": 4096, "H": 32, "H_kv": 32, "F": 11008, "V": 32000}
SHAPES = {"1b": LLAMA_1B, "7b": LLAMA_7B}


def make_llama_checkpoint(
    folder: Path, L: int = 22, N: int = 2048, H: int = 32, H_kv: int = 4, F: int = 5632,
    V: int = 32000, shard_mb: float = 500.0, seed: int = 0,
) -> Path:
    """Write a random bf16 LLaMA-shaped sharded checkpoint (config.json, shards, index) to ``folder``.

    Tensors are generated and written a shard at a time, so the builder holds at most one shard.
    """
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    d_h = N // H

    def tensors():
        yield "model.embed_tokens.weight", (V, N), 0.02
        for i in range(L):
            p = f"model.layers.{i}."
            yield p + "input_layernorm.weight", (N,), None
            yield p + "self_attn.q_proj.weight", (H * d_h, N), N**-0.5
            yield p + "self_attn.k_proj.weight", (H_kv * d_h, N), N**-0.5
            yield p + "self_attn.v_proj.weight", (H_kv * d_h, N), N**-0.5
            yield p + "self_attn.o_proj.weight", (N, H * d_h), N**-0.5
            yield p + "post_attention_layernorm.weight", (N,), None
            yield p + "mlp.gate_proj.weight", (F, N), N**-0.5
            yield p + "mlp.up_proj.weight", (F, N), N**-0.5
            yield p + "mlp.down_proj.weight", (N, F), F**-0.5
        yield "model.norm.weight", (N,), None
        yield "lm_head.weight", (V, N), 0.02

    limit = shard_mb * 2**20
    shard: dict[str, torch.Tensor] = {}
    size = 0
    names: list[list[str]] = []

    def flush() -> None:
        nonlocal shard, size
        if shard:
            names.append(list(shard))
            save_file(shard, str(folder / f"shard-{len(names):05d}.safetensors"), metadata={"format": "pt"})
            shard, size = {}, 0

    for name, shape, scale in tensors():
        t = torch.ones(shape) if scale is None else torch.randn(shape, generator=g) * scale
        t = t.to(torch.bfloat16)
        nbytes = t.numel() * 2
        if size and size + nbytes > limit:
            flush()
        shard[name] = t
        size += nbytes
    flush()
    n = len(names)
    weight_map, total = {}, 0
    for k, ns in enumerate(names, 1):
        fname = f"model-{k:05d}-of-{n:05d}.safetensors"
        os.replace(folder / f"shard-{k:05d}.safetensors", folder / fname)
        for nm in ns:
            weight_map[nm] = fname
        total += (folder / fname).stat().st_size
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    cfg = {
        "model_type": "llama", "hidden_size": N, "num_hidden_layers": L, "num_attention_heads": H,
        "num_key_value_heads": H_kv, "intermediate_size": F, "vocab_size": V, "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    return folder


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of one child process (``os.wait4``: that child only)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return wall, usage.ru_maxrss / 1024


def _layer_tensors(ckpt: Path, i: int):
    """One layer's raw tensors (bf16 → float64), read with the same lazy source the CLI uses."""
    from specbound.weights.sources import open_source

    src = open_source(ckpt)
    p = f"model.layers.{i}."
    get = lambda n: src.get(p + n).double()  # noqa: E731
    return {
        "q": get("self_attn.q_proj.weight"), "k": get("self_attn.k_proj.weight"),
        "v": get("self_attn.v_proj.weight"), "o": get("self_attn.o_proj.weight"),
        "gate": get("mlp.gate_proj.weight"), "up": get("mlp.up_proj.weight"),
        "down": get("mlp.down_proj.weight"),
    }


def dense_worker(ckpt: Path, layers: int, out_json: Path) -> None:
    """The dense per-head procedure on the first ``layers`` layers; seconds per layer."""
    import torch

    cfg = json.loads((ckpt / "config.json").read_text())
    N, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dh, grp = N // H, H // Hkv
    t0 = time.perf_counter()
    for i in range(layers):
        w = _layer_tensors(ckpt, i)
        for h in range(H):
            hs, kv = slice(h * dh, (h + 1) * dh), slice((h // grp) * dh, (h // grp + 1) * dh)
            for prod in (w["q"][hs].T @ w["k"][kv], w["v"][kv].T @ w["o"].T[hs]):
                s = torch.linalg.svdvals(prod)
                s[dh:] = 0.0
                float(prod.norm(dim=0).sum())
        m_in = torch.cat([w["gate"].T, w["up"].T], dim=1)
        torch.linalg.svdvals(m_in)
        torch.linalg.svdvals(w["down"].T)
    out_json.write_text(json.dumps({"s_per_layer": (time.perf_counter() - t0) / layers}))


def floor_worker(ckpt: Path, layers: int, out_json: Path) -> None:
    """The bare kernels of the factored analysis (weights already resident in float64)."""
    import torch

    from specbound.spectra.kernels import gram_eigenvalues

    cfg = json.loads((ckpt / "config.json").read_text())
    N, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dh, grp = N // H, H // Hkv
    total = 0.0
    from specbound.spectra.kernels import top_singular_value

    for i in range(layers):
        w = _layer_tensors(ckpt, i)
        g = torch.arange(H) // grp
        Wq = w["q"].T.reshape(N, H, dh).permute(1, 0, 2).contiguous()
        Wk = w["k"].T.reshape(N, Hkv, dh).permute(1, 0, 2)[g].contiguous()
        Wv = w["v"].T.reshape(N, Hkv, dh).permute(1, 0, 2)[g].contiguous()
        WoT = w["o"].T.reshape(H, dh, N).mT.contiguous()
        m_in = torch.cat([w["gate"].T, w["up"].T], dim=1).contiguous()
        m_out = w["down"].T.contiguous()
        t = time.perf_counter()
        Rs = [torch.linalg.qr(X, mode="r").R for X in (Wq, Wk, Wv, WoT)]
        torch.linalg.svdvals(Rs[0] @ Rs[1].mT)
        torch.linalg.svdvals(Rs[2] @ Rs[3].mT)
        gram_eigenvalues(m_in)  # the analysis's kernel (numpy syrk + eigvalsh on the CPU)
        gram_eigenvalues(m_out)
        # the value-path link VO = W_V W_O of the layer chain: one GEMM and Lanczos σ_1
        top_singular_value(Wv.permute(1, 0, 2).reshape(N, H * dh) @ WoT.permute(1, 0, 2).reshape(N, H * dh).mT)
        total += time.perf_counter() - t
    out_json.write_text(json.dumps({"s_per_layer": total / layers}))


def approx_worker(sizes: str, out_json: Path) -> None:
    """Exact feed-forward spectrum (Gram route) against ``--approx`` on random N × 4N matrices."""
    import torch

    from specbound.spectra.approx import ApproxOptions, approx_spectrum
    from specbound.spectra.kernels import ff_singular_values

    rows = []
    for N in (int(x) for x in sizes.split(",")):
        M = torch.randn(N, 4 * N, generator=torch.Generator().manual_seed(N), dtype=torch.float64) / (4 * N) ** 0.5
        t = time.perf_counter()
        s, _ = ff_singular_values(M)
        t_exact = time.perf_counter() - t
        t = time.perf_counter()
        a = approx_spectrum(M, ApproxOptions())
        t_approx = time.perf_counter() - t
        s1, e1 = a.schatten(1.0)
        rows.append({
            "shape": [N, 4 * N], "exact_s": round(t_exact, 2), "approx_s": round(t_approx, 2),
            "sigma1_rel_err": float(abs(a.values[0] - s[0]) / s[0]), "sigma1_rel_err_estimate": a.sigma1_err / float(s[0]),
            "nuclear_rel_err": abs(s1 - float(s.sum())) / float(s.sum()), "nuclear_rel_err_estimate": e1 / float(s.sum()),
        })
        del M
    out_json.write_text(json.dumps(rows))


def _float32_differences(rep: dict, rep32: dict) -> dict:
    """Largest relative difference of every bound (log10 value and value) and of every per-matrix
    measure between a float32 and a float64 report."""
    out: dict = {}
    for name, b in rep["bounds"].items():
        b32 = rep32["bounds"].get(name)
        if b32 is not None:
            out[f"float32_rel_diff_log10_{name}"] = abs(b32["log10_value"] - b["log10_value"]) / max(abs(b["log10_value"]), 1e-300)
    cols = ("spectral_norm", "frobenius", "nuclear", "norm_21", "stable_rank", "effective_rank", "term")
    worst = {c: 0.0 for c in cols}
    for a, c32 in zip(rep["matrices"], rep32["matrices"]):
        for c in cols:
            if a.get(c) is not None and c32.get(c) is not None and a[c] != 0:
                worst[c] = max(worst[c], abs(c32[c] - a[c]) / abs(a[c]))
    out.update({f"float32_max_rel_diff_{c}": v for c, v in worst.items()})
    out["float32_rank_differs"] = sum(a["rank"] != c32["rank"] for a, c32 in zip(rep["matrices"], rep32["matrices"]))
    return out


def _methods(rep: dict) -> dict:
    """How many matrices of each kind took each route (``method`` column): ``{"M_in: gram": 4, …}``."""
    out: dict = {}
    for m in rep["matrices"]:
        k = f"{m['kind']}: {m['method']}"
        out[k] = out.get(k, 0) + 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--layers", type=int, default=None, help="layers of the shape (default: all of them)")
    ap.add_argument("--compare-float32", action="store_true", help="also run --dtype float32 and compare")
    ap.add_argument("--dense-layers", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the checkpoint here and keep it")
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--skip-cache", action="store_true", help="skip the cold/warm --cache runs")
    ap.add_argument("--skip-floor", action="store_true", help="skip the kernel-floor measurement")
    ap.add_argument("--approx-sizes", default="2048,4096", help="N of the N x 4N --approx comparison ('' to skip)")
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "CKPT", "LAYERS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--build-worker", metavar="CKPT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    args.layers = args.layers or shape["L"]
    if args.build_worker:
        make_llama_checkpoint(Path(args.build_worker), L=args.layers, N=shape["N"], H=shape["H"], H_kv=shape["H_kv"],
                              F=shape["F"], V=shape["V"], shard_mb=1000.0 if args.shape == "7b" else 500.0)
        return
    if args.worker:
        kind, ckpt, layers, out = args.worker
        if kind == "approx":
            approx_worker(ckpt, Path(out))
        else:
            (dense_worker if kind == "dense" else floor_worker)(Path(ckpt), int(layers), Path(out))
        return
    tmp = Path(tempfile.mkdtemp(prefix="specbound-scale-"))
    try:
        ckpt = args.keep if args.keep is not None else tmp / "ckpt"
        t = time.perf_counter()
        if not (ckpt / "config.json").is_file():
            # in a child process: a child's peak RSS starts from its parent's at fork time, so
            # this process stays small (no torch) for the measurements to be the children's own
            subprocess.run([sys.executable, __file__, "--build-worker", str(ckpt), "--layers", str(args.layers),
                            "--shape", args.shape], check=True)
        build_s = time.perf_counter() - t
        shards = sorted(ckpt.glob("*.safetensors"))
        size_gb = sum(f.stat().st_size for f in shards) / 1e9
        exe = str(Path(sys.executable).with_name("specbound"))
        base = [exe, "analyze", str(ckpt), "--no-plots"]
        t_an, rss_an = timed(base + ["--out", str(tmp / "rep")])
        t_cold = rss_cold = t_warm = rss_warm = float("nan")
        if not args.skip_cache:
            t_cold, rss_cold = timed(base + ["--out", str(tmp / "rep-c"), "--cache", str(tmp / "cache")])
            t_warm, rss_warm = timed(base + ["--out", str(tmp / "rep-w"), "--cache", str(tmp / "cache")])
        rep = json.loads((tmp / "rep" / "report.json").read_text())
        L = rep["model"]["L"]
        me = [sys.executable, __file__, "--worker"]
        floor = float("nan")
        if not args.skip_floor:
            timed(me + ["floor", str(ckpt), str(args.dense_layers), str(tmp / "floor.json")])
            floor = json.loads((tmp / "floor.json").read_text())["s_per_layer"] * L
        m = rep["model"]
        row = {
            "shape": f"LLaMA L={L} N={m['N']} H={m['H']} H_kv={m['H_kv']} d_ff={m['d_ff']} bf16, {len(shards)} shards, "
                     f"{size_gb:.2f} GB",
            "cpu_threads": os.cpu_count(),
            "load_average_before": os.getloadavg(),
            "build_s": round(build_s, 1),
            "specbound_analyze_s": round(t_an, 2),
            "specbound_peak_rss_MB": round(rss_an),
            "analysis_only_s": round(rep["elapsed_s"], 2),
            **({} if args.skip_cache else {
                "cache_cold_s": round(t_cold, 2), "cache_cold_peak_rss_MB": round(rss_cold),
                "cache_warm_s": round(t_warm, 2), "cache_warm_peak_rss_MB": round(rss_warm)}),
            "methods": _methods(rep),
            **({} if args.skip_floor else {"floor_kernels_s_extrapolated": round(floor, 2),
                                           "analysis_over_floor": round(rep["elapsed_s"] / floor, 2)}),
        }
        if not args.skip_dense:
            t_d, rss_d = timed(me + ["dense", str(ckpt), str(args.dense_layers), str(tmp / "dense.json")])
            per = json.loads((tmp / "dense.json").read_text())["s_per_layer"]
            row.update({
                "dense_layers_measured": args.dense_layers,
                "dense_s_per_layer": round(per, 2),
                "dense_extrapolated_s": round(per * L, 1),
                "dense_peak_rss_MB": round(rss_d),
                "speedup_vs_dense_extrapolated": round(per * L / t_an, 1),
            })
        if args.compare_float32:
            t32, rss32 = timed(base + ["--out", str(tmp / "rep32"), "--dtype", "float32"])
            rep32 = json.loads((tmp / "rep32" / "report.json").read_text())
            row.update({"float32_analyze_s": round(t32, 2), "float32_peak_rss_MB": round(rss32),
                        "float32_analysis_only_s": round(rep32["elapsed_s"], 2),
                        "float32_speedup": round(t_an / t32, 2), "float32_methods": _methods(rep32),
                        **_float32_differences(rep, rep32)})
        if args.approx_sizes:
            timed(me + ["approx", args.approx_sizes, "0", str(tmp / "approx.json")])
            row["approx_vs_exact_ff"] = json.loads((tmp / "approx.json").read_text())
        row["load_average_after"] = os.getloadavg()
        print(json.dumps(row, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
