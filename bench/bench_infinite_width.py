"""Benchmark of E4's samplers: the exact fast sampler against the naive one (explicit n × n
weights), in the same process, at a few widths n (H = 2 heads, identity and ReLU tokens).

The naive sampler is timed on ``--naive-draws`` draws (fewer at large n, see below) and reported
per draw; the fast sampler on ``--draws`` draws. CPU time of this process (``time.process_time``),
so a machine shared with other jobs does not inflate it.

Usage: ``python bench/bench_infinite_width.py [--ns 16,64,256,1024] [--draws 50000] [--naive-draws 2000]``.
Prints one JSON object (per-draw microseconds and the speed-up) and a small table on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from specbound.experiments.infinite_width.samplers import (
    ModelSpec,
    fast_conditional_variance,
    naive_sample,
)


def _per_draw(fn, draws: int) -> float:  # type: ignore[no-untyped-def]
    t = time.process_time()
    fn(draws)
    return (time.process_time() - t) / draws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="16,64,256,1024")
    ap.add_argument("--draws", type=int, default=50_000)
    ap.add_argument("--naive-draws", type=int, default=2_000)
    ap.add_argument("--H", type=int, default=2)
    args = ap.parse_args()
    rows = []
    for token_map in ("identity", "relu"):
        for n in (int(x) for x in args.ns.split(",")):
            spec = ModelSpec(n=n, H=args.H, token_map=token_map)
            rng = np.random.default_rng(0)
            # the naive cost grows like n^2 per draw: scale the draws down so that each cell takes seconds
            naive_draws = max(4, min(args.naive_draws, int(args.naive_draws * (64 / n) ** 2)))
            naive = _per_draw(lambda m, spec=spec, rng=rng: naive_sample(spec, m, rng), naive_draws)
            fast = _per_draw(lambda m, spec=spec, rng=rng: fast_conditional_variance(spec, m, rng), args.draws)
            rows.append({"token_map": token_map, "n": n, "H": args.H, "naive_draws": naive_draws,
                         "naive_us_per_draw": naive * 1e6, "fast_us_per_draw": fast * 1e6,
                         "speedup": naive / fast})
            print(f"{token_map:8s} n={n:5d}: naive {naive * 1e6:12.1f} us/draw ({naive_draws} draws), "
                  f"fast {fast * 1e6:8.2f} us/draw, x{naive / fast:,.0f}", file=sys.stderr)
    print(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
