"""Benchmark of the data side (issue 15): tokens per second of ``specbound.attention`` on the
packaged MiniLM (CPU) against the bare forward pass with ``output_attentions=True`` (eager
attention), in the same process, on the same batches (sorted by length, right-padded).

    PYTHONPATH=src python bench/bench_attention.py [--sequences 128] [--batch-size 16] [--threads 1] [--repeat 5]

Reported: the bare forward's tokens/s; specbound's forward + statistics (``run_pass``: the
capture and every per-sequence quantity of bounds.md §8) and its end-to-end call (model load,
weight QK k90, bootstrap and tables included); the overhead of each over the bare forward.
The target: the statistics add at most 50% (``pass`` overhead). Best and median of
``--repeat`` interleaved rounds, in wall time and in process CPU time; the 1-minute load average
before and after (the machine may be shared: a busy core inflates the times, the best round is the
least disturbed, and CPU time leaves out the time spent waiting for a core).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=128, help="sequences (model-card sentences, cycled)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable figures on a shared machine)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import specbound
    from specbound.data.api import default_text
    from specbound.data.forward import run_pass
    from specbound.data.model import default_model_path, load_model
    from specbound.data.texts import tokenize

    path = default_model_path()
    loaded = load_model(path)
    lines, _ = default_text()
    texts = [lines[i % len(lines)] for i in range(args.sequences)]
    ids, _, _ = tokenize(loaded.tokenizer, texts, args.max_length)
    n_tokens = sum(map(len, ids))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = []
    for i in range(0, len(order), args.batch_size):
        b = [ids[j] for j in order[i:i + args.batch_size]]
        T = max(map(len, b))
        x = torch.zeros(len(b), T, dtype=torch.long)
        m = torch.zeros(len(b), T, dtype=torch.long)
        for r, s in enumerate(b):
            x[r, :len(s)], m[r, :len(s)] = torch.tensor(s), 1
        batches.append((x, m))
    model = loaded.model
    model.config._attn_implementation = "eager"

    def bare() -> None:
        with torch.no_grad():
            for x, m in batches:
                model(input_ids=x, attention_mask=m, output_attentions=True)

    def passes() -> None:
        run_pass(loaded, ids, batch_size=args.batch_size, device=torch.device("cpu"))

    def end_to_end() -> None:
        specbound.attention(path, texts=texts, max_length=args.max_length, batch_size=args.batch_size)

    # interleaved rounds (bare, pass, end-to-end, bare, ...), best of each: on a shared machine a
    # load change then hits all three alike instead of one
    fns = {"bare": bare, "pass": passes, "end_to_end": end_to_end}
    load_before = os.getloadavg()[0]
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeat):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    t_bare, t_pass, t_all = (min(times[k]) for k in fns)
    m_bare, m_pass, m_all = (statistics.median(times[k]) for k in fns)
    res = {
        "model": "all-MiniLM-L6-v2 (packaged)", "device": "cpu", "threads": args.threads,
        "sequences": len(ids), "tokens": n_tokens, "batch_size": args.batch_size,
        "bare_forward_tokens_per_s": n_tokens / t_bare,
        "specbound_pass_tokens_per_s": n_tokens / t_pass,
        "specbound_attention_tokens_per_s": n_tokens / t_all,
        "pass_overhead": t_pass / t_bare - 1.0,
        "end_to_end_overhead": t_all / t_bare - 1.0,
        "target_pass_overhead": 0.5,
        "median": {"bare_forward_tokens_per_s": n_tokens / m_bare, "specbound_pass_tokens_per_s": n_tokens / m_pass,
                   "specbound_attention_tokens_per_s": n_tokens / m_all, "pass_overhead": m_pass / m_bare - 1.0,
                   "end_to_end_overhead": m_all / m_bare - 1.0},
        "cpu_time": {  # process CPU seconds: less disturbed than wall time when other processes share the cores
            "pass_overhead_best": min(cpu["pass"]) / min(cpu["bare"]) - 1.0,
            "pass_overhead_median": statistics.median(cpu["pass"]) / statistics.median(cpu["bare"]) - 1.0,
            "end_to_end_overhead_best": min(cpu["end_to_end"]) / min(cpu["bare"]) - 1.0,
            "seconds": cpu},
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "seconds": {"bare": t_bare, "pass": t_pass, "end_to_end": t_all},
        "all_seconds": times,
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
