"""E1 fit-protocol search (issue 19): train a few seeds of sparse majority at a few lengths T
under each candidate protocol and record, per (candidate, T), the fraction of runs that reach
100% training accuracy, the epochs and seconds to fit, with the machine's load beside them.

Resumable: one JSON file per (candidate, T, seeds[, cap]) under ``--out`` (default
``scripts/e1_protocol_search_results/``, the measured table of the README); existing files are
reused, so rerunning prints the same table; ``--cached`` prints every stored result. Delete a
file (or pass another ``--out``) to measure again. "s to fit" is wall time on the machine of the
measurement with the load average ("load") beside it: 2 cores shared with other jobs.

    PYTHONPATH=src python scripts/e1_protocol_search.py --lengths 128,256,512 --seeds 2 \
        --candidates literal,adam3e-3,fit

Candidates are overrides of :class:`SparseMajorityConfig` (the literal protocol's fields are
the defaults); ``fit`` is the chosen preset (``PROTOCOLS["fit"]``). Training uses the study's
data and initial weights of each (T, seed) (the test set is not drawn: it does not change them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from specbound.experiments.sparse_majority import PROTOCOLS, RunSpec, SparseMajorityConfig, train_runs

#: warm-up over 100 epochs, then half-cosine decay to 0 over the budget
_WC = {"schedule": "warmup_cosine", "lr_min": 0.0, "warmup_epochs": 100}
#: name -> SparseMajorityConfig overrides (on top of the literal protocol's fields)
CANDIDATES: dict[str, dict] = {
    "literal": {},
    "literal-warm": {**_WC, "optimizer": "sgd", "lr": 0.01},
    "sgd0.1": {**_WC, "optimizer": "sgd", "lr": 0.1},
    "sgd0.3": {**_WC, "optimizer": "sgd", "lr": 0.3},
    "sgd1": {**_WC, "optimizer": "sgd", "lr": 1.0},
    "adam1e-3": {**_WC, "optimizer": "adam", "lr": 1e-3},
    "adam3e-3": {**_WC, "optimizer": "adam", "lr": 3e-3},
    "adam1e-2": {**_WC, "optimizer": "adam", "lr": 1e-2},
    "adam3e-2": {**_WC, "optimizer": "adam", "lr": 3e-2},
    "adam3e-3-lin": {**_WC, "schedule": "warmup_linear", "optimizer": "adam", "lr": 3e-3},
    "adamw3e-3": {**_WC, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.01},
    "adam3e-3-qk3": {**_WC, "optimizer": "adam", "lr": 3e-3, "attn_init_scale": 3.0},
    "adam3e-3-qk10": {**_WC, "optimizer": "adam", "lr": 3e-3, "attn_init_scale": 10.0},
    "adam3e-3-qk2": {**_WC, "optimizer": "adam", "lr": 3e-3, "attn_init_scale": 2.0},
    "adam3e-3-qk5": {**_WC, "optimizer": "adam", "lr": 3e-3, "attn_init_scale": 5.0},
    "adam1e-3-qk3": {**_WC, "optimizer": "adam", "lr": 1e-3, "attn_init_scale": 3.0},
    "adam3e-3-qk3-b95": {**_WC, "optimizer": "adam", "lr": 3e-3, "attn_init_scale": 3.0, "beta2": 0.95},
    "adam3e-3-qk3-b90": {**_WC, "optimizer": "adam", "lr": 3e-3, "attn_init_scale": 3.0, "beta2": 0.9},
    "adam1e-2-qk3-b95": {**_WC, "optimizer": "adam", "lr": 1e-2, "attn_init_scale": 3.0, "beta2": 0.95},
    "adamw3e-3-qk3": {**_WC, "optimizer": "adamw", "lr": 3e-3, "attn_init_scale": 3.0, "weight_decay": 0.01},
    "adam3e-3-qk3-lin": {**_WC, "schedule": "warmup_linear", "optimizer": "adam", "lr": 3e-3, "attn_init_scale": 3.0},
    "adam1e-2-qk3": {**_WC, "optimizer": "adam", "lr": 1e-2, "attn_init_scale": 3.0},
}
# variations of Adam 3e-3, beta2 0.95, W_q/W_k x3 at 4,000 epochs (the small lengths fit last)
_B95 = {**CANDIDATES["adam3e-3-qk3-b95"], "max_epochs": 4000}
CANDIDATES["b95-lr1e-2"] = {**_B95, "lr": 1e-2}
CANDIDATES["b95-cap8000"] = {**_B95, "max_epochs": 8000}
CANDIDATES["b95-qk1"] = {**_B95, "attn_init_scale": 1.0}
CANDIDATES["b90"] = {**_B95, "beta2": 0.9}
#: the chosen preset (PROTOCOLS["fit"]: beta2 0.9 over 8,000 epochs)
CANDIDATES["fit"] = {k: v for k, v in PROTOCOLS["fit"].items() if k != "protocol"}


def run_one(name: str, T: int, seeds: int, cap: int | None, out: Path) -> dict:
    path = out / f"{name}_T{T}_s{seeds}{'' if cap is None else f'_cap{cap}'}.json"
    if path.exists():
        return json.loads(path.read_text())
    over = {CANDIDATES[name]}
    if cap is not None:
        over["max_epochs"] = cap
    cfg = replace(SparseMajorityConfig(), **over, n_test=1, lengths=(T,), n_seeds=seeds)
    cfg.validate()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = train_runs(cfg, [RunSpec(T, s) for s in range(seeds)])
    wall = time.perf_counter() - t0
    rec = {"candidate": name, "T": T, "seeds": seeds, "max_epochs": cfg.max_epochs, "overrides": over,
           "fitted": sum(not r.stopped_at_cap for r in res),
           "epochs": [r.epochs for r in res], "seconds": [round(r.train_seconds, 2) for r in res],
           "reached_train_acc": [r.reached_train_acc for r in res], "wall_seconds": round(wall, 2),
           "load_before": load0, "load_after": os.getloadavg()[0], "threads": torch.get_num_threads()}
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(path)
    return rec


def fmt(rec: dict) -> str:
    fit = [e for e, a in zip(rec["epochs"], rec["reached_train_acc"], strict=True) if a == 1.0]
    fs = [s for s, a in zip(rec["seconds"], rec["reached_train_acc"], strict=True) if a == 1.0]
    ep = f"{min(fit)}–{max(fit)}" if fit else "–"
    sec = f"{min(fs):.0f}–{max(fs):.0f}" if fs else "–"
    acc = f"{min(rec['reached_train_acc']):.3f}"
    return (f"| {rec['candidate']} | {rec['T']} | {rec['fitted']}/{rec['seeds']} | {rec['max_epochs']} | {ep} | "
            f"{sec} | {acc} | {rec['wall_seconds']:.0f} | {rec['load_before']:.1f}/{rec['load_after']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--lengths", default="128,256,512")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--cap", type=int, default=None, help="epoch cap (default: each candidate's max_epochs)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("e1_protocol_search_results"))
    ap.add_argument("--cached", action="store_true", help="print the table of every result under --out, train nothing")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    names = [c for c in a.candidates.split(",") if c]
    unknown = [c for c in names if c not in CANDIDATES]
    if unknown:
        print(f"unknown candidate(s) {unknown}; known: {', '.join(CANDIDATES)}", file=sys.stderr)
        return 2
    print("| candidate | T | fitted | cap | epochs to fit | s to fit | min train acc | wall s | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    if a.cached:
        recs = [json.loads(f.read_text()) for f in sorted(a.out.glob("*.json"))]
        order = {n: i for i, n in enumerate(CANDIDATES)}
        for rec in sorted(recs, key=lambda r: (order.get(r["candidate"], len(order)), r["T"], r["max_epochs"])):
            print(fmt(rec))
        return 0
    for name in names:
        for T in (int(t) for t in a.lengths.split(",")):
            print(fmt(run_one(name, T, a.seeds, a.cap, a.out)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
