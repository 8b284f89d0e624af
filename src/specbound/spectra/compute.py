"""One loop over layers × blocks, one policy: the spectra of a whole model.

``compute_spectra(weights, policy)`` reads one layer at a time (``weights.layer(i)``), splits it
into its blocks (:func:`~specbound.spectra.blocks.blocks_of`), takes each block from the cache
when it holds it and computes the others as concurrent tasks (:func:`task_threads`), then
stores what it computed. With ``reference=`` it computes the spectra of the differences
``A − A_0`` instead (:func:`~specbound.spectra.blocks.difference_blocks`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from specbound.errors import InputError
from specbound.spectra.blocks import ORDER, Block, BlockResult, blocks_of, difference_blocks
from specbound.spectra.kernels import FF_METHODS, FFMethod, blas_threads
from specbound.spectra.spectrum import LayerSpectra, ModelSpectra, WeightNorms
from specbound.weights.canonical import LayerWeights, ModelInfo, TransformerWeights, vector_label

if TYPE_CHECKING:
    from specbound.spectra.approx import ApproxOptions
    from specbound.spectra.cache import SpectraCache

#: Called after each layer as ``progress(done, total)``.
Progress = Callable[[int, int], None]

#: At most this many concurrent linear-algebra tasks per layer (a layer has four blocks).
MAX_TASKS = 4


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
    try:
        dev = torch.device(device if device is not None else "cpu")
    except RuntimeError:
        raise InputError(f"device {device!r} is not supported: use cpu or cuda.") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {str(dev)!r} is not supported: use cpu or cuda.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA device is available; use --device cpu.")
    return dev


@dataclass(frozen=True)
class SpectraPolicy:
    """How spectra are computed: working ``dtype`` (float64 or float32), ``device`` (cpu, cuda),
    feed-forward route ``ff_method`` (``auto``: Gram eigenvalues when accurate, ``gram``, ``svd``),
    ``dense`` (form every product and take dense SVDs: the published procedure, for parity),
    ``approx`` (:class:`~specbound.spectra.approx.ApproxOptions` for matrix-free feed-forward
    estimates, or ``None``). :meth:`check` validates every field with one clear error."""

    dtype: str | torch.dtype = "float64"
    device: str | torch.device | None = "cpu"
    ff_method: FFMethod = "auto"
    dense: bool = False
    approx: "ApproxOptions | None" = None
    #: bytes the concurrent block tasks may hold at once (``None``: half the memory available at
    #: the start); a task that would exceed it waits for the running ones (it runs alone if needed)
    max_memory: int | None = None

    @classmethod
    def of(cls, *, dtype: Any = "float64", device: Any = "cpu", ff_method: Any = "auto", dense: bool = False,
           approx: Any = None, max_memory: Any = None) -> "SpectraPolicy":
        """A checked policy from ``analyze``'s keywords (``approx=True`` means the default options)."""
        if approx is True:
            from specbound.spectra.approx import ApproxOptions

            approx = ApproxOptions()
        policy = cls(dtype=dtype, device=device, ff_method=ff_method, dense=bool(dense), approx=approx or None,
                     max_memory=max_memory)
        policy.check()
        return policy

    def check(self) -> "SpectraPolicy":
        resolve_dtype(self.dtype)
        resolve_device(self.device)
        if self.ff_method not in FF_METHODS:
            raise InputError(f"ff_method {self.ff_method!r}: use auto, gram or svd.")
        if self.dense and self.approx is not None:
            raise InputError("approximate mode (--approx) and the dense procedure (--dense) exclude each other.")
        if self.max_memory is not None and (isinstance(self.max_memory, bool) or not isinstance(self.max_memory, int)
                                            or self.max_memory <= 0):
            raise InputError(f"max_memory must be a positive number of bytes (--max-memory 2G), got {self.max_memory!r}.")
        return self

    @cached_property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @cached_property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def dtype_name(self) -> str:
        return str(self.torch_dtype).removeprefix("torch.")

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype_name, "device": str(self.device), "dense": self.dense,
                "ff_method": self.ff_method, "approx": None if self.approx is None else self.approx.to_dict()}


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo), ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class MemoryBudget:
    """Bytes the block tasks of the spectra loop may hold at once (:attr:`SpectraPolicy.max_memory`).

    ``with budget.reserve(n):`` waits until ``n`` more bytes fit under the limit, or until no other
    task holds any (a task larger than the whole budget then runs alone), and returns them on
    exit. ``peak`` is the largest total ever reserved (the tests and the benchmark read it).
    """

    def __init__(self, limit: int | None):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._cv = threading.Condition()

    @contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        with self._cv:
            while self.limit is not None and self.used > 0 and self.used + n > self.limit:
                self._cv.wait()
            self.used += n
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cv:
                self.used -= n
                self._cv.notify_all()


def _budgeted(budget: MemoryBudget, block: Block, policy: SpectraPolicy) -> BlockResult:
    with budget.reserve(block.memory(policy)):
        return block.compute(policy)


class _InlineExecutor(Executor):
    """Runs each submitted call at once in the calling thread (the sequential route)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # delivered by .result(), as from a thread pool
            fut.set_exception(e)
        return fut


INLINE = _InlineExecutor()


@contextmanager
def task_threads(device: torch.device) -> Iterator[Executor]:
    """Worker threads for the blocks of a layer.

    On the CPU with ``n = torch.get_num_threads() ≥ 2``: ``w = min(n, MAX_TASKS)`` worker threads,
    each torch op (and each numpy BLAS/LAPACK call, :func:`blas_threads`) running on ``n // w``
    threads (``torch.set_num_threads``, restored on exit), so the process uses the ``n`` threads
    it was given. The independent LAPACK calls of a layer (the two feed-forward eigenvalue
    problems, the batched QR/SVDs) then run side by side instead of each being split over all
    threads: ``eigvalsh`` of a 768 × 768 matrix is barely faster on 2 threads than on 1, and
    multi-threaded LAPACK calls slow down badly when another process holds a core. Yields the
    inline executor (sequential) on CUDA or with one thread.
    """
    n = torch.get_num_threads()
    if device.type != "cpu":
        yield INLINE
        return
    if n < 2:
        with blas_threads(n):
            yield INLINE
        return
    w = min(n, MAX_TASKS)
    torch.set_num_threads(max(1, n // w))
    try:
        with blas_threads(n // w), ThreadPoolExecutor(w, thread_name_prefix="specbound-linalg") as ex:
            yield ex
    finally:
        torch.set_num_threads(n)


def _vector_norms(lw: LayerWeights) -> dict[str, tuple[str, float]]:
    """``WeightNorms.vectors``: label and ‖v‖_1 of every 1-D tensor of ``lw.extras``."""
    return {
        name: (vector_label(name), float(v.detach().abs().sum(dtype=torch.float64)))
        for name, v in lw.extras.items()
        if v.ndim == 1
    }


def _weight_norms(blocks: dict[str, Block], l1: dict[str, list[float]], lw: LayerWeights) -> WeightNorms:
    heads = {k: l1[k] for k in ("W_Q", "W_K", "W_V", "W_O")}
    totals = {**{k: float(sum(v)) for k, v in heads.items()}, "M_in": l1["M_in"][0], "M_out": l1["M_out"][0]}
    return WeightNorms(
        heads=heads, totals=totals, vectors=_vector_norms(lw),
        params={**{k: getattr(lw, k).numel() for k in ("W_Q", "W_K", "W_V", "W_O", "M_out")},
                "M_in": sum(p.numel() for p in lw.m_in_parts())},
    )


def layer_spectra(
    lw: LayerWeights,
    policy: SpectraPolicy = SpectraPolicy(),
    *,
    executor: Executor = INLINE,
    cache: "SpectraCache | None" = None,
    reference: LayerWeights | None = None,
    budget: MemoryBudget | None = None,
) -> LayerSpectra:
    """Spectra of one layer *as read* (any dtype, CPU): blocks from ``cache`` when it holds them,
    the others computed as tasks on ``executor`` (each upcasts its own tensors to the policy's
    dtype and device); with ``reference``, the spectra of the differences ``A − A_0``; ``budget``:
    the :class:`MemoryBudget` the tasks reserve their estimated memory from."""
    blocks = difference_blocks(lw, reference) if reference is not None else blocks_of(lw)
    got: dict[str, BlockResult] = {}
    if cache is not None:
        for name in ORDER:
            specs = cache.get(blocks[name], policy, lw)
            if specs is not None:
                got[name] = BlockResult(specs, {})
    if policy.dense:  # the published procedure: one block after the other, every thread on each
        executor = INLINE
    budget = budget or MemoryBudget(None)
    futures = {name: executor.submit(_budgeted, budget, blocks[name], policy) for name in ORDER if name not in got}
    for name, fut in futures.items():
        got[name] = fut.result()
        if cache is not None:
            cache.put(blocks[name], policy, lw, got[name].spectra)
    l1: dict[str, list[float]] = {}
    for name in ORDER:
        l1.update(got[name].l1 if name in futures else blocks[name].l1(policy))
    names = lw.names if reference is None else {k: f"{v} - reference" for k, v in lw.names.items()}
    return LayerSpectra(
        layer=lw.index, qk=got["qk"].spectra, ov=got["ov"].spectra, m_in=got["m_in"].spectra[0],
        m_out=got["m_out"].spectra[0], names=names, weight_norms=_weight_norms(blocks, l1, lw),
        vo=got["vo"].spectra[0],  # type: ignore[arg-type]
    )


def _default_budget() -> int | None:
    avail = available_memory()
    return None if avail is None else avail // 2


_ARCH_FIELDS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_ff")


def check_same_architecture(model: ModelInfo, ref: ModelInfo) -> None:
    """Raise :class:`InputError` naming every size that differs between model and reference."""
    diffs = [
        f"{f} {getattr(model, f)} vs {getattr(ref, f)}" for f in _ARCH_FIELDS if getattr(model, f) != getattr(ref, f)
    ]
    if diffs:
        raise InputError(
            f"--init {ref.source}: the reference checkpoint has a different architecture from "
            f"{model.source} ({'; '.join(diffs)}); distances need the same architecture "
            "(pass the initialisation or pre-trained checkpoint of this very model)."
        )


def difference_info(info: ModelInfo, ref: ModelInfo) -> ModelInfo:
    """The :class:`ModelInfo` of the difference model: ``d_h' = 2·d_h``, ``H_kv' = H`` (K/V expanded
    to query heads)."""
    return ModelInfo(
        model_type=info.model_type, n_layers=info.n_layers, d_model=info.d_model, n_heads=info.n_heads,
        n_kv_heads=info.n_heads, d_head=2 * info.d_head, d_ff=info.d_ff,
        source=f"{info.source} - {ref.source}", activation=info.activation, notes=list(info.notes),
    )


def compute_spectra(
    weights: TransformerWeights,
    policy: SpectraPolicy | None = None,
    *,
    cache: "str | os.PathLike | SpectraCache | None" = None,
    progress: Progress | None = None,
    reference: TransformerWeights | None = None,
) -> ModelSpectra:
    """Spectra of every layer; one layer's weights are resident at a time.

    ``policy``: :class:`SpectraPolicy` (default float64 on the CPU). ``cache``: a folder (or
    :class:`~specbound.spectra.cache.SpectraCache`) of spectra keyed by the content of the tensors
    they come from; blocks found there are not recomputed. ``reference``: a model of the same
    architecture: the spectra are those of the differences ``A − A_0`` (``bounds.md`` §6).
    """
    policy = (policy or SpectraPolicy()).check()
    store = None
    if cache is not None:
        from specbound.spectra.cache import SpectraCache

        store = cache if isinstance(cache, SpectraCache) else SpectraCache(cache)
    info = weights.info
    if reference is not None:
        check_same_architecture(info, reference.info)
        info = difference_info(info, reference.info)
    L = info.n_layers
    out: list[LayerSpectra] = []
    budget = MemoryBudget(policy.max_memory if policy.max_memory is not None else _default_budget())
    with task_threads(policy.torch_device) as pool:
        for i in range(L):
            lw = weights.layer(i)  # as read: each block upcasts its own tensors
            lw0 = reference.layer(i) if reference is not None else None
            out.append(layer_spectra(lw, policy, executor=pool, cache=store, reference=lw0, budget=budget))
            del lw, lw0
            if progress is not None:
                progress(i + 1, L)
    approx = any(m.approximate for _, _, _, m in ModelSpectra(info, out).matrices())
    stats = None if store is None else {"dir": str(store.root), **store.stats.to_dict()}
    return ModelSpectra(info, out, dense=policy.dense, approx=approx, cache_stats=stats)

