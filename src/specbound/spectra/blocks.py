"""The blocks of a layer: the only code that knows ``QK = W_Q W_Kᵀ`` and ``OV = W_V W_O``.

A layer has four blocks of analysed matrices (``bounds.md`` §1–2):

* ``qk``: :class:`FactoredProduct` of ``W_Q[h]`` ``[N, d_h]`` and ``W_K[g(h)]`` ``[N, d_h]``,
  every query head h at once, with ``g(h) = h // (H / H_kv)`` (grouped-query attention);
* ``ov``: :class:`FactoredProduct` of ``W_V[g(h)]`` ``[N, d_h]`` and ``W_O[h]`` ``[d_h, N_out]``;
* ``m_in``, ``m_out``: :class:`Dense` feed-forward matrices;

and the value path ``vo`` (:class:`ValuePath`, ``VO[ℓ] = W_V W_O`` over all heads), a link of this
project's layer chain (``bounds.md`` §6) of which only σ_1, ‖·‖_F and ‖·‖_{2,1} are computed.

Each block holds the tensors *as stored* (any dtype, usually CPU) and computes its spectra,
its ``‖·‖_{2,1}`` and the entrywise ``‖·‖_{1,1}`` of its factors after upcasting them itself
(so the four blocks of a layer can run as concurrent tasks, conversions included).
``block - reference`` is the same kind of block whose product is the difference ``A − A_0``:
for the products a product of thin factors of doubled width,

    QK − QK_0 = W_Q W_Kᵀ − W_Q0 W_K0ᵀ = [W_Q | −W_Q0] [W_K | W_K0]ᵀ        (N × 2d_h factors)
    OV − OV_0 = W_V W_O − W_V0 W_O0   = [W_V | −W_V0] [W_O ; W_O0]          (2d_h-wide factors)

so distances to a reference cost O(N·d_h²) per head too. A head whose factors both equal the
reference's gets exact-zero factors (its distance is exactly 0, not rounding noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import torch

from specbound.errors import InputError
from specbound.spectra.kernels import (
    BLOCK_BYTES,
    FULL_UPCAST_BYTES,
    check_range,
    column_norms_21,
    dense_product,
    factored_product,
    ff_singular_values,
    gram_accepted,
    gram_blocked,
    gram_blocked_l1,
    rescaled,
    rescaled_float,
    scale_exponent,
    top_singular_value,
)
from specbound.spectra.spectrum import LinkNorms, MatrixSpectrum
from specbound.weights.canonical import LayerWeights

if TYPE_CHECKING:
    from specbound.spectra.compute import SpectraPolicy


def _last_abs(t: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """``|t|`` for the last use of ``t``: in place when ``t`` is this task's own upcast copy (saves
    an allocation the size of the weight), a new tensor when ``t`` is the stored ``raw`` itself."""
    return t.abs() if t is raw else t.abs_()


def _heads_l1(t: torch.Tensor, raw: torch.Tensor) -> list[float]:
    """``‖t[h]‖_{1,1}`` per head (float64 sums); consumes ``t`` (see :func:`_last_abs`)."""
    return [float(x) for x in _last_abs(t, raw).sum(dim=(-2, -1), dtype=torch.float64).cpu()]


def _itemsize(policy: "SpectraPolicy") -> int:
    return torch.empty((), dtype=policy.torch_dtype).element_size()


def _difference_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    dt = torch.promote_types(a.dtype, b.dtype)
    if not dt.is_floating_point or dt in (torch.float16, torch.bfloat16):
        return torch.float64
    return dt


def _same_heads(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[heads]`` bool: head i of ``a`` equals head i of ``b`` exactly."""
    return (a == b).flatten(1).all(dim=1)


@dataclass(frozen=True)
class BlockResult:
    """What computing a block gives: one spectrum per matrix and the ``‖·‖_{1,1}`` of its factors
    (per stored head for the products' factors, one total for a dense matrix)."""

    spectra: list[MatrixSpectrum]
    l1: dict[str, list[float]]


@dataclass(frozen=True)
class FactoredProduct:
    """``P[h] = A[h] B[h]ᵀ`` for every query head h, from the factors as stored.

    ``left`` ``[H_a, rows, d]`` and ``right`` ``[H_b, cols, d]`` (``[H_b, d, cols]`` when
    ``right_t``, as ``W_O`` is stored); ``A = left[left_heads]``, ``B = right[right_heads]``
    (transposed when ``right_t``), an index of ``None`` meaning every head in order.
    ``factor_names``: the canonical names of ``left`` and ``right`` (``W_Q``/``W_K``, ``W_V``/``W_O``).
    """

    name: str
    kind: str
    left: torch.Tensor
    right: torch.Tensor
    left_heads: torch.Tensor | None
    right_heads: torch.Tensor | None
    right_t: bool
    factor_names: tuple[str, str]
    #: the stored tensors' names, for error messages (``layer 3: q_proj · k_proj``)
    label: str = ""

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The stored tensors the block comes from (its cache key is their content)."""
        return (self.left, self.right)

    def _upcast(self, policy: "SpectraPolicy") -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The factors in the working dtype, scaled by powers of two (exact) when their entries are
        so large or small that products or squares could overflow or underflow
        (:func:`~specbound.spectra.kernels.scale_exponent`), and the exponents of their scales."""
        dev, dt = policy.torch_device, policy.torch_dtype
        what = self.label or f"the {self.kind} factors"
        check_range(self.left, dt, what)
        check_range(self.right, dt, what)
        a, b = self.left.to(device=dev, dtype=dt), self.right.to(device=dev, dtype=dt)
        ea, eb = scale_exponent(a), scale_exponent(b)
        if ea:
            a = a * 2.0 ** -ea if a is self.left else a.mul_(2.0 ** -ea)
        if eb:
            b = b * 2.0 ** -eb if b is self.right else b.mul_(2.0 ** -eb)
        return a, b, ea, eb

    @property
    def n_heads(self) -> int:
        return self.left.shape[0] if self.left_heads is None else int(self.left_heads.numel())

    @property
    def rows(self) -> int:
        return self.left.shape[1]

    @property
    def cols(self) -> int:
        return self.right.shape[-1] if self.right_t else self.right.shape[1]

    @property
    def width(self) -> int:
        return self.left.shape[2]

    def _factors(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        A = a if self.left_heads is None else a[self.left_heads.to(a.device)]
        B = b if self.right_heads is None else b[self.right_heads.to(b.device)]
        return A, (B.mT if self.right_t else B)

    def compute(self, policy: "SpectraPolicy") -> BlockResult:
        """Spectra of every head (factored core, or the formed product with ``policy.dense``)."""
        dt = policy.torch_dtype
        what = self.label or f"the {self.kind} matrices"
        a, b, ea, eb = self._upcast(policy)
        e = ea + eb
        A, B = self._factors(a, b)
        s, n21 = (dense_product if policy.dense else factored_product)(A, B)
        s = rescaled(s.cpu(), e, dt, what)
        n21 = rescaled(n21.cpu(), e, torch.float64, what)
        method = "dense" if policy.dense else "factored"
        specs = [MatrixSpectrum(s[h], self.rows, self.cols, float(n21[h]), method) for h in range(s.shape[0])]
        del A, B
        la, lb = self.factor_names
        l1a = [math.ldexp(x, ea) for x in _heads_l1(a, self.left)]
        l1b = [math.ldexp(x, eb) for x in _heads_l1(b, self.right)]
        return BlockResult(specs, {la: l1a, lb: l1b})

    def memory(self, policy: "SpectraPolicy") -> int:
        """Bytes :meth:`compute` holds at its peak (an estimate for the memory budget): the upcast
        factors and their per-head expansions; with ``dense`` the formed products too."""
        w = _itemsize(policy)
        H = self.n_heads
        est = 2 * (self.left.numel() + self.right.numel()) * w
        if policy.dense:
            est += 2 * H * self.rows * self.cols * w
        return est

    def l1(self, policy: "SpectraPolicy") -> dict[str, list[float]]:
        """The factors' ``‖·‖_{1,1}`` per stored head alone (for a block read from a cache)."""
        a, b, ea, eb = self._upcast(policy)
        la, lb = self.factor_names
        return {la: [math.ldexp(x, ea) for x in _heads_l1(a, self.left)],
                lb: [math.ldexp(x, eb) for x in _heads_l1(b, self.right)]}

    def expected_shape(self, dense: bool) -> tuple[int, int, int, int]:
        """``(matrices, rows, cols, listed values)`` of this block's spectra (cache validation)."""
        k = min(self.rows, self.cols) if dense else min(self.rows, self.width)
        return self.n_heads, self.rows, self.cols, k

    def __sub__(self, ref: "FactoredProduct") -> "FactoredProduct":
        """The block of ``P − P_0`` (module docstring): one factor per query head, width 2d."""
        if (self.left.shape, self.right.shape) != (ref.left.shape, ref.right.shape):
            raise InputError(
                f"--init: the {self.kind} factors {self.factor_names} have shapes "
                f"{tuple(self.left.shape)}, {tuple(self.right.shape)} in the model but "
                f"{tuple(ref.left.shape)}, {tuple(ref.right.shape)} in the reference; distances need the "
                "same architecture."
            )
        dt = _difference_dtype(self.left, ref.left)
        c, c0 = (self.left.to(dt), self.right.to(dt)), (ref.left.to(dt), ref.right.to(dt))
        lh = self.left_heads if self.left_heads is not None else torch.arange(self.left.shape[0])
        rh = self.right_heads if self.right_heads is not None else torch.arange(self.right.shape[0])
        left = torch.cat([c[0], -1.0 * c0[0]], dim=-1)[lh].clone()
        right = torch.cat([c[1], c0[1]], dim=-2 if self.right_t else -1)[rh].clone()
        zero = _same_heads(c[0], c0[0])[lh] & _same_heads(c[1], c0[1])[rh]
        left[zero] = 0.0
        right[zero] = 0.0
        return FactoredProduct(self.name, self.kind, left, right, None, None, self.right_t, self.factor_names,
                               f"{self.label} - reference" if self.label else "")


@dataclass(frozen=True)
class Dense:
    """A dense matrix ``M`` ``[rows, cols]`` as stored (a feed-forward matrix), or a tuple of its
    column blocks ``(M_0, M_1, …)`` as stored, ``M = [M_0 | M_1 | …]`` (a gated ``M_in = [W_gate |
    W_up]``): the Gram route accumulates ``M Mᵀ = Σ_k M_k M_kᵀ`` block by block and sums the
    column norms and magnitudes per block, so the blocks are never concatenated in their stored
    precision; the SVD route concatenates their upcast copies (in the working dtype)."""

    name: str
    kind: str
    M: torch.Tensor | tuple[torch.Tensor, ...]
    #: the stored tensors' names, for error messages
    label: str = ""

    @property
    def parts(self) -> tuple[torch.Tensor, ...]:
        return self.M if isinstance(self.M, tuple) else (self.M,)

    @property
    def shape(self) -> tuple[int, int]:
        return self.parts[0].shape[0], sum(p.shape[1] for p in self.parts)

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.parts

    def _what(self) -> str:
        return self.label or self.kind

    def _upcast(self, policy: "SpectraPolicy") -> torch.Tensor:
        """The whole matrix in the working dtype (the blocks copied side by side into one upcast
        matrix: no concatenation in the stored precision)."""
        dev, dt = policy.torch_device, policy.torch_dtype
        for p in self.parts:
            check_range(p, dt, self._what())
        if len(self.parts) == 1:
            return self.M.to(device=dev, dtype=dt)  # type: ignore[union-attr]
        out = torch.empty(self.shape, dtype=dt, device=dev)
        j = 0
        for p in self.parts:
            out[:, j:j + p.shape[1]].copy_(p)
            j += p.shape[1]
        return out

    def compute(self, policy: "SpectraPolicy") -> BlockResult:
        """Gram route or SVD (``policy.ff_method``; the SVD with ``policy.dense``), or the
        matrix-free estimate with ``policy.approx``. Weights so large or small that the Gram
        matrix could overflow or underflow are scaled by a power of two first (exact) and the
        values scaled back (:func:`~specbound.spectra.kernels.scale_exponent`)."""
        if self._blocked(policy):
            return self._compute_blocked(policy)
        dt = policy.torch_dtype
        M = self._upcast(policy)
        raw = self.M if len(self.parts) == 1 else None
        e = scale_exponent(M)
        if e:
            M = M * 2.0 ** -e if M is raw else M.mul_(2.0 ** -e)
        rows, cols = M.shape
        if policy.approx is not None and not policy.dense:
            if e:
                raise InputError(f"{self._what()}: entries up to 2^{e} are outside the range the approximate "
                                 "mode (--approx) handles; analyse without --approx.")
            from specbound.spectra.approx import approx_spectrum

            spec = approx_spectrum(M, policy.approx)
            _check_spectrum(spec, dt, self._what())
        else:
            s, how = ff_singular_values(M, "svd" if policy.dense else policy.ff_method)
            spec = MatrixSpectrum(rescaled(s.cpu(), e, dt, self._what()), rows, cols,
                                  rescaled_float(column_norms_21(M), e, torch.float64, self._what()), how)
        l1 = math.ldexp(float(_last_abs(M, raw).sum(dtype=torch.float64)), e)  # type: ignore[arg-type]
        return BlockResult([spec], {self.kind: [l1]})

    def memory(self, policy: "SpectraPolicy") -> int:
        """Bytes :meth:`compute` holds at its peak (an estimate for the memory budget): the float64
        Gram matrix, one block and the buffer of its product when accumulated block by block,
        else the upcast matrix and its Gram matrix (or the SVD's workspace, about the matrix
        again)."""
        w = _itemsize(policy)
        n = min(self.shape)
        if self._blocked(policy):
            return 2 * n * n * 8 + BLOCK_BYTES
        return 2 * sum(p.numel() for p in self.parts) * w + n * n * 8

    def _blocked(self, policy: "SpectraPolicy") -> bool:
        """Whether the Gram matrix is accumulated block by block: the Gram route may be taken
        (not ``dense``, ``approx`` or ``ff_method="svd"``) and the upcast copy would exceed
        :data:`~specbound.spectra.kernels.FULL_UPCAST_BYTES`."""
        size = sum(p.numel() for p in self.parts) * torch.empty((), dtype=policy.torch_dtype).element_size()
        return (size > FULL_UPCAST_BYTES and not policy.dense and policy.approx is None
                and policy.ff_method != "svd")

    def _compute_blocked(self, policy: "SpectraPolicy") -> BlockResult:
        """The Gram route without the whole upcast matrix (:func:`~specbound.spectra.kernels.gram_blocked`);
        when the accuracy guard refuses it (``auto``), the SVD of the whole upcast matrix, said in
        the method column (``svd (full matrix)``)."""
        dev, dt = policy.torch_device, policy.torch_dtype
        for p in self.parts:
            check_range(p, dt, self._what())
        e = scale_exponent(*self.parts)
        lam, n21, l1 = gram_blocked(self.M, dt, dev, BLOCK_BYTES, exponent=e)
        rows, cols = self.shape
        n21 = rescaled_float(n21, e, torch.float64, self._what())
        if policy.ff_method == "gram" or gram_accepted(lam, dt):
            s = rescaled(lam.clamp_min(0).sqrt(), e, dt, self._what())
            spec = MatrixSpectrum(s, rows, cols, n21, "gram")
        else:
            M = self._upcast(policy)
            if e:
                M = M * 2.0 ** -e if M is self.M else M.mul_(2.0 ** -e)
            s, _ = ff_singular_values(M, "svd")
            spec = MatrixSpectrum(rescaled(s.cpu(), e, dt, self._what()), rows, cols, n21, "svd (full matrix)")
            del M
        return BlockResult([spec], {self.kind: [l1]})

    def l1(self, policy: "SpectraPolicy") -> dict[str, list[float]]:
        if self._blocked(policy) or len(self.parts) > 1:
            return {self.kind: [gram_blocked_l1(self.M, policy.torch_dtype, policy.torch_device, BLOCK_BYTES)]}
        M = self._upcast(policy)
        return {self.kind: [float(_last_abs(M, self.M).sum(dtype=torch.float64))]}  # type: ignore[arg-type]

    def expected_shape(self, dense: bool) -> tuple[int, int, int, None]:
        """Feed-forward spectra may list fewer than ``min(rows, cols)`` values: ``None``."""
        return 1, self.shape[0], self.shape[1], None

    def __sub__(self, ref: "Dense") -> "Dense":
        if self.shape != ref.shape:
            raise InputError(
                f"--init: {self.kind} has shape {tuple(self.shape)} in the model but "
                f"{tuple(ref.shape)} in the reference; distances need the same architecture."
            )
        label = f"{self.label} - reference" if self.label else ""
        if len(self.parts) == len(ref.parts) and all(p.shape == q.shape for p, q in zip(self.parts, ref.parts)):
            diffs = tuple(p.to(_difference_dtype(p, q)) - q.to(_difference_dtype(p, q))
                          for p, q in zip(self.parts, ref.parts))
            return Dense(self.name, self.kind, diffs if len(diffs) > 1 else diffs[0], label)
        a, b = torch.cat(self.parts, dim=1), torch.cat(ref.parts, dim=1)  # blocks of other widths
        dt = _difference_dtype(a, b)
        return Dense(self.name, self.kind, a.to(dt) - b.to(dt), label)


def _check_spectrum(spec: MatrixSpectrum, dtype: torch.dtype, what: str) -> None:
    """An estimate whose values or ``‖·‖_{2,1}`` are not finite is an error naming the matrix."""
    rescaled(spec.values.cpu(), 0, dtype, what)
    rescaled_float(spec.norm_21, 0, torch.float64, what)


@dataclass(frozen=True)
class ValuePath:
    """``VO[ℓ] = Σ_h W_V[g(h)] W_O[h] = W_V W_O`` (``N × N_out``, every head at once): the attention
    link of this project's layer chain (``bounds.md`` §6). Its rank may reach N, so only what the
    chain families need is computed, never its full spectrum: from the concatenated factors
    ``A = [A_0 | … | A_{H−1}]`` ``[N, k]`` and ``B = [B_0 | … | B_{H−1}]`` ``[N_out, k]``
    (``k = H·d``) of the per-head OV block, ``VO = A Bᵀ`` is formed (one GEMM), ``‖VO‖_F²`` and
    ``‖VO‖_{2,1}`` are read off it and ``σ_1`` comes from Lanczos
    (:func:`~specbound.spectra.kernels.top_singular_value`). ``policy.dense`` takes σ_1 from its SVD. The difference of two value paths is the value
    path of the difference of their OV blocks."""

    ov: FactoredProduct
    name: str = "vo"
    kind: str = "VO"

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.ov.tensors

    def compute(self, policy: "SpectraPolicy") -> BlockResult:
        a, b, ea, eb = self.ov._upcast(policy)
        e = ea + eb
        A, B = self.ov._factors(a, b)
        del a, b
        H, N, d = A.shape
        A = A.permute(1, 0, 2).reshape(N, H * d)  # [N, k]: head h in columns h·d … (h+1)·d − 1
        B = B.permute(1, 0, 2).reshape(B.shape[1], H * d)  # [N_out, k]
        n_out = B.shape[0]
        P = A @ B.mT  # [N, N_out]: one GEMM, cheaper than a QR of A (measured: 64 -> 40 ms at N = 768)
        del A, B  # (on a 7B-shaped layer each is as large as P)
        if policy.dense:
            s1, method = float(torch.linalg.svdvals(P)[0]), "dense"
        else:
            s1, method = top_singular_value(P), "factored"
        # ‖P‖_F from the sum of squares of the (scaled, so finite) P, as the norm: its square may
        # exceed the float range when the norm does not (scaled back below)
        fro, n21 = math.sqrt(float((P * P).sum())), float(torch.linalg.vector_norm(P, dim=0).sum())
        what = f"{self.ov.label} (all heads)" if self.ov.label else "VO"
        s1, fro, n21 = (rescaled_float(x, e, policy.torch_dtype, what) for x in (s1, fro, n21))
        return BlockResult([LinkNorms(N, n_out, s1, fro, n21, method)], {})  # type: ignore[list-item]

    def l1(self, policy: "SpectraPolicy") -> dict[str, list[float]]:
        return {}

    def memory(self, policy: "SpectraPolicy") -> int:
        """Bytes :meth:`compute` holds at its peak (an estimate): the upcast factors, the
        concatenated ``A`` and ``B`` and the formed ``VO``."""
        w = _itemsize(policy)
        k = self.ov.n_heads * self.ov.width
        return ((self.ov.left.numel() + self.ov.right.numel()) * w + (self.ov.rows + self.ov.cols) * k * w
                + self.ov.rows * self.ov.cols * w)

    def __sub__(self, ref: "ValuePath") -> "ValuePath":
        return ValuePath(self.ov - ref.ov)


Block = Union[FactoredProduct, Dense, ValuePath]

#: The order a layer's blocks are handed to the worker threads (two on two cores). On a 7B-shaped
#: layer, on one thread each: M_in ≈ 19 s, M_out ≈ 14 s, the value path VO ≈ 7 s, QK and OV
#: ≈ 1.5 s. M_in first, then VO and M_out on the other thread, so the short QK and OV fill in at
#: the end (VO last left a thread idle for 5.5 s of each layer's 28.7 s). Peak RSS of the
#: 32-layer 7B run (issue 18): 1,741 MiB with VO last, 1,951 MiB with the order M_in, M_out, VO,
#: QK, OV, 1,943 MiB with this one.
ORDER = ("m_in", "vo", "m_out", "qk", "ov")


def blocks_of(lw: LayerWeights) -> dict[str, Block]:
    """The blocks of a layer (module docstring), keyed ``qk``, ``ov``, ``m_in``, ``m_out``, and the
    value-path link ``vo`` of the layer chain (:class:`ValuePath`). A gated ``M_in`` given as its
    column blocks (``LayerWeights.M_in_parts``) stays in blocks."""
    H, H_kv = lw.W_Q.shape[0], lw.W_K.shape[0]
    g = torch.arange(H, device=lw.W_Q.device) // (H // H_kv)

    def label(*keys: str) -> str:
        names = [lw.names.get(k, k) for k in keys]
        return f"layer {lw.index}: " + " · ".join(names)

    ov = FactoredProduct("ov", "OV", lw.W_V, lw.W_O, g, None, True, ("W_V", "W_O"), label("W_V", "W_O"))
    parts = lw.m_in_parts()
    return {
        "qk": FactoredProduct("qk", "QK", lw.W_Q, lw.W_K, None, g, False, ("W_Q", "W_K"), label("W_Q", "W_K")),
        "ov": ov,
        "m_in": Dense("m_in", "M_in", parts if len(parts) > 1 else parts[0], label("M_in")),
        "m_out": Dense("m_out", "M_out", lw.M_out, label("M_out")),
        "vo": ValuePath(ov),
    }


def difference_blocks(lw: LayerWeights, lw0: LayerWeights) -> dict[str, Block]:
    """``blocks_of(lw) − blocks_of(lw0)`` block by block."""
    ref = blocks_of(lw0)
    diff = {name: b - ref[name] for name, b in blocks_of(lw).items() if name != "vo"}  # type: ignore[operator]
    diff["vo"] = ValuePath(diff["ov"])  # type: ignore[arg-type]
    return diff
