"""Spectra of a whole model, with the device/dtype policy and per-kind log spectral norms."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from specbound.errors import InputError
from specbound.npkernels import blas_threads
from specbound.spectra.core import (
    _INLINE,
    FFMethod,
    LayerSpectra,
    MatrixSpectrum,
    layer_spectra,
    layer_spectra_tasks,
)
from specbound.weights.canonical import ModelInfo, TransformerWeights

if TYPE_CHECKING:
    from specbound.spectra.approx import ApproxOptions
    from specbound.spectra.cache import SpectraCache
    from specbound.warmstart import WarmStart

KINDS = ("QK", "OV", "M_in", "M_out")

#: Called after each layer as ``progress(done, total)``.
Progress = Callable[[int, int], None]


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Working dtype: float64 (default) or float32; half precisions are refused (they overflow)."""
    table = {"float64": torch.float64, "float32": torch.float32}
    if isinstance(dtype, torch.dtype):
        if dtype in table.values():
            return dtype
        dtype = str(dtype).removeprefix("torch.")
    if dtype not in table:
        raise InputError(f"dtype {dtype!r} is not supported: use float64 (default) or float32.")
    return table[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device asked for; CUDA asked for but absent is an error, never a silent fallback."""
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA device is available; use --device cpu.")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {str(dev)!r} is not supported: use cpu or cuda.")
    return dev


#: At most this many concurrent linear-algebra tasks per layer (a layer has four: M_in, M_out, QK, OV).
MAX_TASKS = 4


@contextmanager
def task_threads(device: torch.device) -> Iterator[Executor | None]:
    """Worker threads for the per-layer tasks of :func:`~specbound.spectra.core.layer_spectra_tasks`.

    On the CPU with ``n = torch.get_num_threads() ≥ 2``: ``w = min(n, MAX_TASKS)`` worker threads,
    each torch op (and each numpy BLAS/LAPACK call, :func:`blas_threads`) running on ``n // w``
    threads (``torch.set_num_threads``, restored on exit), so the process uses the ``n`` threads
    it was given. The independent LAPACK calls of a layer (the two ``eigvalsh`` of the
    feed-forward Gram matrices, the batched QR/SVDs) are then run side by side instead of each
    being split over all threads: ``eigvalsh`` of a 768 × 768 matrix is barely faster on 2
    threads than on 1, and multi-threaded LAPACK calls slow down badly when another process holds
    a core. Yields ``None`` (run sequentially) on CUDA or with one thread (numpy's BLAS then on
    that one thread too).
    """
    n = torch.get_num_threads()
    if device.type != "cpu":
        yield None
        return
    if n < 2:
        with blas_threads(n):
            yield None
        return
    w = min(n, MAX_TASKS)
    torch.set_num_threads(max(1, n // w))
    try:
        with blas_threads(n // w), ThreadPoolExecutor(w, thread_name_prefix="specbound-linalg") as ex:
            yield ex
    finally:
        torch.set_num_threads(n)


@dataclass
class ModelSpectra:
    """Every spectrum of a model plus its :class:`ModelInfo`; the input of every bound."""

    info: ModelInfo
    layers: list[LayerSpectra]
    dense: bool = False
    #: some spectra are estimates (``--approx``): :class:`~specbound.spectra.approx.ApproxSpectrum`
    approx: bool = False
    #: ``{"dir", "hits", "misses", "corrupt", "writes"}`` when a spectra cache was used
    cache_stats: dict[str, Any] | None = None
    #: tables derived from these spectra, built once (e.g. ``bounds.norms.matrix_norms``); not pickled
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["memo"] = {}
        return state

    def matrix(self, layer: int, head: int, kind: str) -> MatrixSpectrum:
        ls = self.layers[layer]
        if kind == "QK":
            return ls.qk[head]
        if kind == "OV":
            return ls.ov[head]
        if kind == "M_in":
            return ls.m_in
        if kind == "M_out":
            return ls.m_out
        raise KeyError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")

    def matrices(self) -> Iterator[tuple[int, int, str, MatrixSpectrum]]:
        """``(layer, head, kind, spectrum)`` for every analysed matrix; head −1 for M_in/M_out."""
        for ls in self.layers:
            for h, m in enumerate(ls.qk):
                yield ls.layer, h, "QK", m
            for h, m in enumerate(ls.ov):
                yield ls.layer, h, "OV", m
            yield ls.layer, -1, "M_in", ls.m_in
            yield ls.layer, -1, "M_out", ls.m_out

    def spectral_norms(self) -> dict[str, np.ndarray]:
        """``C_2`` per kind: ``QK``/``OV`` ``[L, H]``, ``M_in``/``M_out`` ``[L]`` (float64)."""
        def top(m: MatrixSpectrum) -> float:
            return float(m.values[0]) if m.values.numel() else 0.0

        return {
            "QK": np.array([[top(m) for m in ls.qk] for ls in self.layers]),
            "OV": np.array([[top(m) for m in ls.ov] for ls in self.layers]),
            "M_in": np.array([top(ls.m_in) for ls in self.layers]),
            "M_out": np.array([top(ls.m_out) for ls in self.layers]),
        }


def compute_spectra(
    weights: TransformerWeights,
    *,
    dtype: str | torch.dtype = "float64",
    device: str | torch.device | None = "cpu",
    dense: bool = False,
    ff_method: FFMethod = "auto",
    progress: Progress | None = None,
    cache: "str | os.PathLike | SpectraCache | None" = None,
    approx: "bool | ApproxOptions | None" = None,
    warm: "WarmStart | None" = None,
) -> ModelSpectra:
    """Spectra of every layer; one layer's weights are resident at a time.

    Weights are upcast (bf16/fp16 → ``dtype``) and moved to ``device`` before any algebra.
    ``cache``: a folder (or :class:`~specbound.spectra.cache.SpectraCache`) of spectra keyed by
    the content of the tensors they come from; blocks found there are not recomputed.
    ``approx``: ``True`` or :class:`~specbound.spectra.approx.ApproxOptions` for matrix-free
    estimates of the feed-forward spectra (``spectra/approx.py``).
    ``warm``: the CLI's :class:`~specbound.warmstart.WarmStart`: stopped here, and the Gram
    eigenvalues it computed are used for the matrices they belong to (factored CPU route only).
    """
    if warm is not None:
        warm.stop()  # no further matrix: from here on one layer at a time, as always
    wdtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    if ff_method not in ("auto", "gram", "svd"):
        raise InputError(f"ff_method {ff_method!r}: use auto, gram or svd.")
    if dense and approx:
        raise InputError("approximate mode (--approx) and the dense procedure (--dense) exclude each other.")
    L = weights.info.n_layers
    out: list[LayerSpectra] = []
    if cache is not None or approx:
        from specbound.spectra.approx import ApproxOptions, ApproxSpectrum
        from specbound.spectra.cache import SpectraCache, layer_spectra_blocks

        store = cache if isinstance(cache, SpectraCache) or cache is None else SpectraCache(cache)
        opts = approx if isinstance(approx, ApproxOptions) else (ApproxOptions() if approx else None)
        with task_threads(dev) as pool:
            for i in range(L):
                lw = weights.layer(i)  # as read: hashed, then only the blocks to compute are upcast
                out.append(layer_spectra_blocks(lw, device=dev, dtype=wdtype, dense=dense, ff_method=ff_method,
                                                approx=opts, cache=store, executor=pool))
                del lw
                if progress is not None:
                    progress(i + 1, L)
        is_approx = any(isinstance(m, ApproxSpectrum) for ls in out for m in (ls.m_in, ls.m_out))
        stats = None if store is None else {"dir": str(store.root), **store.stats.to_dict()}
        return ModelSpectra(weights.info, out, dense=dense, approx=is_approx, cache_stats=stats)
    lookup = _warm_lookup(warm, wdtype) if warm is not None and dev.type == "cpu" else None
    with task_threads(dev) as pool:
        for i in range(L):
            if not dense:  # the layer as read: each task upcasts its own tensors
                lw = weights.layer(i)
                out.append(layer_spectra_tasks(lw, pool or _INLINE, device=dev, dtype=wdtype, ff_method=ff_method,
                                               ff_eigenvalues=lookup))
            else:
                lw = weights.layer(i).to(dev, wdtype)
                out.append(layer_spectra(lw, dense=dense, ff_method=ff_method))
            del lw
            if progress is not None:
                progress(i + 1, L)
    return ModelSpectra(weights.info, out, dense=dense)


#: safetensors dtype codes of the torch dtypes a checkpoint is read in
_ST_CODE = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def _warm_lookup(warm: "WarmStart", wdtype: torch.dtype) -> Callable[[str | None, torch.Tensor], torch.Tensor | None]:
    working = str(wdtype).removeprefix("torch.")

    def lookup(name: str | None, raw: torch.Tensor) -> torch.Tensor | None:
        lam = warm.eigenvalues(name, tuple(raw.shape), _ST_CODE.get(raw.dtype, ""), working)
        return None if lam is None else torch.from_numpy(lam)

    return lookup
