"""Many checkpoints: ``specbound analyze SOURCE SOURCE ... --jobs N | --ray | --ray-address ADDRESS``.

Each checkpoint is one task (:func:`analyze_one`): ``analyze`` plus its report, written to a
subfolder of the output folder named after the source. Tasks run on a local process pool
(:class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method; every worker
gets ``cpu_count // jobs`` torch threads) or as Ray tasks (``ray.init(address)``, a local
instance without an address; Ray is the optional extra ``specbound[ray]``, imported only here
and only when asked for). Ray workers may run on other machines, so they return the
:class:`~specbound.analysis.Report` and the driver writes it. A failing checkpoint does not stop
the others: its one-line error is returned. :func:`analyze_many` writes ``combined.csv``: one
row per analysed checkpoint with the source, the model facts and each bound's log10 value.

Pool workers ignore Ctrl-C (the parent ends them) and exit as soon as their parent dies
(:func:`worker_init`); a worker killed by the OOM killer is reported as :class:`WorkerDied`.
Ctrl-C during :func:`analyze_many` writes ``combined.csv`` for the finished reports, removes
what the unfinished ones staged and raises :class:`specbound.writing.Interrupted`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specbound.errors import InputError, SpecboundError

if TYPE_CHECKING:  # pandas is imported where the table is built: importing this module is light
    import pandas as pd

#: ``ray_address`` that starts a local Ray instance (the CLI's ``--ray`` without ``--ray-address``).
RAY_LOCAL = "local"

#: Columns of ``combined.csv`` before the per-bound ``log10_<family>`` columns.
COMBINED_COLUMNS = ["source", "report", "model_type", "L", "N", "H", "H_kv", "d_h", "d_ff", "elapsed_s"]


def report_dirs(sources: Sequence[Any]) -> list[str]:
    """A distinct, filesystem-safe subfolder name per source (``name``, ``name-2``, …)."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for s in sources:
        text = str(s).rstrip("/\\")
        base = Path(text).name if Path(text).exists() else text.replace("/", "__")  # path, or hub id
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "checkpoint"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def summary_row(source: Any, subdir: str, report: Any) -> dict[str, Any]:
    """One ``combined.csv`` row: source, model facts and each bound's (finite) log10 value."""
    m = report.model
    row: dict[str, Any] = {
        "source": str(source), "report": subdir, "model_type": m.model_type, "L": m.n_layers,
        "N": m.d_model, "H": m.n_heads, "H_kv": m.n_kv_heads, "d_h": m.d_head, "d_ff": m.d_ff,
        "elapsed_s": round(float(report.elapsed_s), 3),
    }
    for name, b in report.bounds.items():
        v = b.log10_value
        if v is not None and v == v and abs(v) != float("inf"):
            row[f"log10_{name}"] = float(v)
    return row


def analyze_one(
    source: Any, subdir: str, out_root: str | None, analyze_kwargs: dict[str, Any],
    write_kwargs: dict[str, Any], threads: int | None = None, return_report: bool = False,
) -> dict[str, Any]:
    """One task: analyse ``source``; write its report to ``out_root/subdir`` if ``out_root``.

    Returns ``{"row": ...}`` (plus ``"report"`` if ``return_report``) or ``{"error": message}``.
    Runs in a worker process (spawned or Ray), so it imports what it needs itself.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    from specbound.analysis import analyze
    from specbound.report import write_report

    try:
        report = analyze(source, **analyze_kwargs)
        if out_root is not None:
            write_report(report, Path(out_root) / subdir, **write_kwargs)
    except SpecboundError as e:
        return {"error": str(e)}
    except Exception as e:  # a bug or an environment problem: one line, the other tasks go on
        return {"error": f"internal error ({type(e).__name__}: {e})".replace("\n", " ")}
    res: dict[str, Any] = {"row": summary_row(source, subdir, report)}
    if return_report:
        res["report"] = report
    return res


def _ray_module():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed: pip install 'specbound[ray]'.") from None
    return ray


def analyze_many(
    sources: Sequence[Any],
    out_dir: str | os.PathLike,
    *,
    jobs: int = 1,
    ray_address: str | None = None,
    plots: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **analyze_kwargs: Any,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Analyse every source; one report per source in ``out_dir/<name>``, and ``combined.csv``.

    ``jobs``: local worker processes (1 = in this process, one after the other). ``ray_address``:
    run on Ray instead (``"local"`` starts a local instance, ``"auto"`` or ``host:port`` joins a
    cluster). ``analyze_kwargs`` go to :func:`~specbound.analysis.analyze` unchanged.
    Returns the combined table (also written to ``out_dir/combined.csv``, rows in the order of
    ``sources``) and ``(source, error)`` for every failed source.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"jobs must be a positive integer, got {jobs!r}.")
    from specbound import writing

    out = Path(out_dir)
    writing.check_folder_target(out, "--out", ("combined.csv",))
    subdirs = report_dirs(sources)
    existed = {sub for sub in subdirs if (out / sub).exists()}
    write_kwargs = {"plots": plots}
    results: list[dict[str, Any] | None] = [None] * len(sources)
    total = len(sources)
    from specbound.report import write_report

    def tick() -> None:
        if progress is not None:
            progress(sum(r is not None for r in results), total)

    on_ray = ray_address is not None
    if on_ray:  # workers may run elsewhere: they return the report and this process writes it
        args = [(src, sub, None, analyze_kwargs, write_kwargs, None, True) for src, sub in zip(sources, subdirs)]
    else:
        threads = None if jobs == 1 or total == 1 else max(1, (os.cpu_count() or 1) // min(jobs, total))
        args = [(src, sub, str(out), analyze_kwargs, write_kwargs, threads) for src, sub in zip(sources, subdirs)]
    interrupted = False
    tasks = map_tasks(analyze_one, args, jobs=jobs, ray_address=ray_address)
    try:
        for i, res, exc in tasks:
            if exc is not None:  # analyze_one catches errors itself: the task, its worker or its node died
                where = "Ray task" if on_ray else "worker process"
                detail = str(exc).splitlines()[0] if str(exc) else ""
                res = {"error": f"{where} failed ({type(exc).__name__}: {detail})"}
            if "report" in res:
                try:
                    write_report(res.pop("report"), out / subdirs[i], **write_kwargs)
                except SpecboundError as e:
                    res = {"error": str(e)}
            results[i] = res
            tick()
    except KeyboardInterrupt:
        interrupted = True
        tasks.close()  # a pool's workers are ended here, before their folders are cleaned
        for i, sub in enumerate(subdirs):  # what did not finish: its staging folders, a folder this run made
            if results[i] is None and (out / sub).is_dir():
                writing.clean_stale(out / sub, min_age=0.0)  # its workers were ended just now
                if sub not in existed:  # (a report it holds is not in combined.csv: not finished)
                    shutil.rmtree(out / sub, ignore_errors=True)
    rows = [r["row"] for r in results if r is not None and "row" in r]
    failed = [(str(s), r["error"]) for s, r in zip(sources, results) if r is not None and "error" in r]
    bound_cols = sorted({k for r in rows for k in r if k.startswith("log10_")})
    import pandas as pd

    table = pd.DataFrame(rows, columns=COMBINED_COLUMNS + bound_cols)
    if rows:
        writing.write_csv(out / "combined.csv", table, "--out")
    if interrupted:
        done = len(rows)
        if done:
            raise writing.Interrupted(f"interrupted; {done} of {total} reports written to {out} "
                                      f"(listed in {out / 'combined.csv'}), the others removed")
        raise writing.Interrupted("interrupted; nothing written")
    return table, failed


def ray_init(ray_address: str) -> Any:
    """Import Ray (a clear error if it is missing) and connect: ``"local"`` starts a local
    instance, ``"auto"`` or ``host:port`` joins a cluster. Returns the ``ray`` module."""
    import logging

    ray = _ray_module()
    ray.init(address=None if ray_address == RAY_LOCAL else ray_address, ignore_reinit_error=True,
             include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    return ray


def map_tasks(
    fn: Callable[..., Any], arglists: Sequence[tuple[Any, ...]], *, jobs: int = 1,
    ray_address: str | None = None,
) -> Iterator[tuple[int, Any, BaseException | None]]:
    """Run ``fn(*args)`` for every ``args`` in ``arglists``; yield ``(index, result, None)`` or
    ``(index, None, exception)`` as tasks finish (in completion order).

    One task per item: in this process one after the other (``jobs == 1``), on a ``spawn``
    process pool of ``jobs`` workers, or as Ray tasks (``ray_address``; see :func:`ray_init`).
    ``fn`` must be importable by name in the workers. No scheduling of our own: the pool or
    Ray decides where and when each task runs.
    """
    if ray_address is not None:
        ray = ray_init(ray_address)
        remote = ray.remote(fn)
        refs = {remote.remote(*args): i for i, args in enumerate(arglists)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield refs[ref], ray.get(ref), None
                except Exception as e:  # the task raised, or its node died
                    yield refs[ref], None, e
    elif jobs == 1 or len(arglists) <= 1:
        for i, args in enumerate(arglists):
            try:
                res = fn(*args)
            except Exception as e:
                yield i, None, e
            else:
                yield i, res, None
    else:
        from concurrent.futures.process import BrokenProcessPool

        ctx = multiprocessing.get_context("spawn")
        workers = min(jobs, len(arglists))
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init,
                                   initargs=(os.getpid(),))
        futs = {pool.submit(fn, *args): i for i, args in enumerate(arglists)}
        finished = False
        try:
            for fut in as_completed(futs):
                try:
                    yield futs[fut], fut.result(), None
                except BrokenProcessPool:  # a worker was killed (the OOM killer, a signal)
                    yield futs[fut], None, WorkerDied(
                        f"a worker process was killed (out of memory? the kernel's OOM killer ends the "
                        f"largest process) with {workers} worker processes (--jobs {jobs}); try fewer --jobs")
                except Exception as e:  # the task raised
                    yield futs[fut], None, e
            finished = True
        finally:
            for fut in futs:
                fut.cancel()
            if finished:
                pool.shutdown(wait=True)
            else:  # Ctrl-C or the caller stopped: end the workers now, not after their tasks
                _terminate(pool)


class WorkerDied(RuntimeError):
    """A worker process of :func:`map_tasks` died while running a task (killed: out of memory,
    a signal); the message says so and with how many workers."""


def _terminate(pool: ProcessPoolExecutor) -> None:
    """End ``pool``'s worker processes (SIGTERM, then SIGKILL) and wait for them."""
    procs = list(getattr(pool, "_processes", {}).values())
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
    pool.shutdown(wait=False, cancel_futures=True)


#: Seconds between two checks of a pool worker that its parent is still alive.
PARENT_POLL_S = 0.25


def worker_init(parent_pid: int) -> None:
    """Initializer of every pool worker: Ctrl-C is the parent's to handle (the worker ignores
    SIGINT; the parent ends it), and a daemon thread ends the worker as soon as its parent has
    died (``kill -9`` of the parent must not leave workers running: they are reparented, so
    ``os.getppid()`` changes)."""
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(PARENT_POLL_S)

    threading.Thread(target=watch, name="specbound-parent-watch", daemon=True).start()
