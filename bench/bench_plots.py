"""Time the analyze plots on the packaged MiniLM (issue 14: all three together ≤ 1 s).

    python bench/bench_plots.py [--repeat 3] [CHECKPOINT]

Prints the wall and CPU time of each plot (rendered to PNG bytes, the best of ``--repeat`` runs, after
one warm-up run that also pays matplotlib's import) and their sum.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import specbound
    from specbound.report import plots

    report = specbound.analyze(args.source)
    t0 = time.perf_counter()
    figures = plots.render_plots(report)  # warm-up: imports, font cache
    print(f"first call (import + render): {time.perf_counter() - t0:.2f} s")
    total = cpu_total = 0.0
    for name in figures:
        best = cpu = float("inf")
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            plots.render_plot(report, name)
            best = min(best, time.perf_counter() - t)
            cpu = min(cpu, time.process_time() - c)
        total += best
        cpu_total += cpu
        print(f"{name:22s} wall {best:.3f} s  cpu {cpu:.3f} s")
    print(f"{'total':22s} wall {total:.3f} s  cpu {cpu_total:.3f} s")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} (wall time under load > cpu time)")


if __name__ == "__main__":
    main()
