"""The one canonical representation of a Transformer's weights.

Every matrix is in the *row-vector* orientation of ``shared/spec/bounds.md`` §1: a token is a
row ``x ∈ R^{1×N}`` and a linear map is ``x ↦ x A``.  Adapters are the only code that knows
tensor names; everything downstream of them sees only these dataclasses.

Shapes (per layer):

=========  ===================  ================================================
name       shape                meaning
=========  ===================  ================================================
``W_Q``    ``[H, N, d_h]``      query projection of each query head
``W_K``    ``[H_kv, N, d_h]``   key projection of each key/value head
``W_V``    ``[H_kv, N, d_h]``   value projection of each key/value head
``W_O``    ``[H, d_h, N]``      rows of the output projection that read head h
``M_in``   ``[N, d_ff]``        first feed-forward matrix (``[gate | up]`` if gated)
``M_out``  ``[d_ff, N_out]``    second feed-forward matrix
=========  ===================  ================================================

Query head ``h`` uses key/value head ``h // (H / H_kv)`` (grouped-query attention).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from specbound.errors import InputError

#: Machine-readable codes for assumptions of the bound that an architecture breaks.
NOTE_CODES = {
    "gated_mlp": "Gated MLP (e.g. SwiGLU): M_in is the concatenation [W_gate | W_up] and the "
    "feed-forward block is not globally Lipschitz, so the Lipschitz factor L_phi does not hold.",
    "rotary": "Rotary position embeddings: the effective bilinear form is W_Q R_(j-i) W_K^T, so "
    "the spectrum of QK = W_Q W_K^T is a proxy for it.",
    "grouped_query_attention": "Grouped-query attention: several query heads share one key/value "
    "head; QK and OV of head h use KV head h // (H / H_kv).",
    "pre_norm": "Pre-norm residual blocks (LayerNorm/RMSNorm before attention and MLP): the "
    "normalisation is outside the proxy, as in the paper's post-norm model.",
    "rms_norm": "RMSNorm instead of LayerNorm: normalisation parameters are outside the proxy.",
    "custom_mapping": "Weights mapped by a user-supplied name mapping: the architecture is not "
    "checked against the paper's model.",
    "no_feedforward_activation_between": "The model's feed-forward block differs from the paper's "
    "M_out phi(M_in x); see the adapter's note.",
    "readout_as_m_out": "M_out is a task read-out (d_ff x n_classes, applied at one position), "
    "not a feed-forward map back to the hidden size N.",
}


@dataclass(frozen=True)
class Note:
    """An assumption of the bound that the analysed model does not meet (machine-readable)."""

    code: str
    message: str

    @classmethod
    def of(cls, code: str, extra: str = "") -> "Note":
        base = NOTE_CODES.get(code, "")
        msg = (base + (" " + extra if extra else "")).strip()
        return cls(code=code, message=msg)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class ModelInfo:
    """Architecture facts of the analysed model.

    ``n_layers`` = L, ``d_model`` = N, ``n_heads`` = H, ``n_kv_heads`` = H_kv, ``d_head`` = d_h,
    ``d_ff`` = feed-forward width (per branch; a gated MLP's M_in has ``2·d_ff`` columns).
    """

    model_type: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_ff: int
    source: str
    activation: str = "gelu"
    notes: list[Note] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_ff"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise InputError(f"{self.source}: {name} must be a positive integer, got {v!r}.")
        if self.n_heads % self.n_kv_heads:
            raise InputError(
                f"{self.source}: the number of query heads ({self.n_heads}) is not a multiple of "
                f"the number of key/value heads ({self.n_kv_heads}); fix the config."
            )

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 for classic multi-head attention)."""
        return self.n_heads // self.n_kv_heads

    def kv_index(self) -> torch.Tensor:
        """``[H]`` long tensor: the KV head each query head reads."""
        return torch.arange(self.n_heads) // self.group_size

    # Short names of bounds.md §1.
    @property
    def L(self) -> int:
        return self.n_layers

    @property
    def N(self) -> int:
        return self.d_model

    @property
    def H(self) -> int:
        return self.n_heads

    @property
    def H_kv(self) -> int:
        return self.n_kv_heads

    @property
    def d_h(self) -> int:
        return self.d_head

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "L": self.n_layers,
            "N": self.d_model,
            "H": self.n_heads,
            "H_kv": self.n_kv_heads,
            "d_h": self.d_head,
            "d_ff": self.d_ff,
            "activation": self.activation,
            "source": self.source,
            "notes": [n.to_dict() for n in self.notes],
        }


#: The tensor dtypes specbound analyses (upcast to the working precision); anything else (complex,
#: bool, integers, float8) is an :class:`InputError` naming the tensor.
READABLE_TORCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: A 1-D tensor of ``LayerWeights.extras`` is a normalisation parameter when its name matches this.
_NORM_NAME = ("norm", "layernorm", "layer_norm", "ln_", ".ln", "rms")


def vector_label(name: str) -> str:
    """``"norm"`` (LayerNorm/RMSNorm weight or bias), ``"bias"`` or ``"other"``, by tensor name."""
    low = name.lower()
    if any(k in low for k in _NORM_NAME):
        return "norm"
    if low.endswith("bias") or ".bias" in low or low.startswith("b_") or "_bias" in low:
        return "bias"
    return "other"


#: How an adapter joins the names of several stored tensors that make one matrix
#: (``M_in = [W_gate | W_up]``): ``"a | b"``.
NAME_SEPARATOR = " | "


def split_names(joined: str) -> list[str]:
    """The stored tensor names in one entry of ``LayerWeights.names``: joined by
    :data:`NAME_SEPARATOR`, each possibly followed by the slice an adapter took of it
    (``"h.0.attn.c_attn.weight[:, 0:N]"`` → ``"h.0.attn.c_attn.weight"``)."""
    return [_SLICE.sub("", n.strip()) for n in joined.split(NAME_SEPARATOR) if n.strip()]


_SLICE = re.compile(r"\[[^\[\]]*\]$")


class _ColumnStack:
    """``LayerWeights.M_in``: the tensor given, or, when an adapter gives ``M_in=None`` and the
    column blocks ``M_in_parts`` (a gated MLP's ``W_gate``, ``W_up`` as stored), their
    concatenation made on demand and not kept (the spectra read the blocks themselves,
    :meth:`LayerWeights.m_in_parts`, and never concatenate them)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            raise AttributeError(self.attr)  # a required field: no default
        v = obj.__dict__.get(self.attr)
        if v is None and obj.__dict__.get("M_in_parts"):
            return torch.cat(obj.M_in_parts, dim=1)
        return v

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.attr] = value


@dataclass
class LayerWeights:
    """One layer's canonical matrices (row-vector orientation; shapes in the module docstring).

    ``names`` maps each field to the tensor name(s) it was read from, for error messages.
    ``extras`` holds tensors outside the proxies (biases, norms), labelled by their names.
    A gated MLP may give ``M_in=None`` and ``M_in_parts=(W_gate, W_up)`` (``[N, d_ff]`` each,
    as stored): ``M_in`` is then their concatenation, made only when read.
    """

    index: int
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    M_in: torch.Tensor = _ColumnStack()  # type: ignore[assignment]
    M_out: torch.Tensor
    names: dict[str, str] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    gated: bool = False
    M_in_parts: tuple[torch.Tensor, ...] = ()

    def m_in_parts(self) -> tuple[torch.Tensor, ...]:
        """``M_in`` as its column blocks, as stored: ``M_in_parts``, or ``(M_in,)``."""
        return tuple(self.M_in_parts) if self.M_in_parts else (self.M_in,)

    def m_in_shape(self) -> tuple[int, ...]:
        """``M_in``'s shape without forming it."""
        parts = self.m_in_parts()
        if any(p.ndim != 2 for p in parts):
            return tuple(parts[0].shape)
        return (parts[0].shape[0], sum(p.shape[1] for p in parts))

    def validate(self, info: ModelInfo) -> None:
        """Check shapes against ``info`` and finiteness; raise :class:`InputError` naming the tensor."""
        H, Hkv, N, dh = info.n_heads, info.n_kv_heads, info.d_model, info.d_head
        expected = {
            "W_Q": (H, N, dh),
            "W_K": (Hkv, N, dh),
            "W_V": (Hkv, N, dh),
            "W_O": (H, dh, N),
        }
        for key, shape in expected.items():
            t = getattr(self, key)
            if tuple(t.shape) != shape:
                raise InputError(
                    f"layer {self.index}: {self._name(key)} has shape {tuple(t.shape)} after head "
                    f"split, expected {shape} from the config (H={H}, H_kv={Hkv}, N={N}, d_h={dh}); "
                    "check that the config matches the checkpoint."
                )
        m_in = self.m_in_shape()
        if len(m_in) != 2 or m_in[0] != N or any(p.shape[0] != N for p in self.m_in_parts()):
            raise InputError(
                f"layer {self.index}: {self._name('M_in')} has row-vector shape "
                f"{m_in}, expected ({N}, d_ff); check the config."
            )
        if self.M_out.ndim != 2 or self.M_out.shape[0] != m_in[1] // (2 if self.gated else 1):
            raise InputError(
                f"layer {self.index}: {self._name('M_out')} has row-vector shape "
                f"{tuple(self.M_out.shape)}, which does not follow M_in's {m_in}; "
                "check the config."
            )
        checked = [(k, getattr(self, k)) for k in ("W_Q", "W_K", "W_V", "W_O")]
        checked += [("M_in", p) for p in self.m_in_parts()] + [("M_out", self.M_out)]
        for key, t in checked:
            self._check_dtype(self._name(key), t)
        for name, t in self.extras.items():
            self._check_dtype(name, t)
            if not torch.isfinite(t).all():
                raise InputError(
                    f"layer {self.index}: tensor {name} contains NaN or Inf; the checkpoint is "
                    "corrupt or diverged: re-export it or pick an earlier checkpoint."
                )
        for key, t in checked:
            # A NaN or ±Inf entry makes the sum NaN or ±Inf, so a finite sum proves every entry
            # finite (one pass, no mask); a non-finite sum (or an overflow) gets the exact check.
            if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
                raise InputError(
                    f"layer {self.index}: tensor {self._name(key)} contains NaN or Inf; the "
                    "checkpoint is corrupt or diverged: re-export it or pick an earlier checkpoint."
                )

    def _check_dtype(self, name: str, t: torch.Tensor) -> None:
        if t.dtype not in READABLE_TORCH_DTYPES:
            what = ("complex: the imaginary part would be dropped; export the real weights" if t.is_complex()
                    else "dequantise or cast the checkpoint to float16, bfloat16 or float32 first")
            raise InputError(
                f"layer {self.index}: tensor {name} has dtype {str(t.dtype).removeprefix('torch.')}; "
                f"specbound analyses real floating-point weights only (float16, bfloat16, float32, "
                f"float64): {what}."
            )

    def _name(self, key: str) -> str:
        return self.names.get(key, key)

    def source_names(self) -> set[str]:
        """Every stored tensor the matrices were read from (:func:`split_names` of ``names``)."""
        return {n for v in self.names.values() for n in split_names(v)}

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "LayerWeights":
        """Copy with every matrix moved to ``device`` and cast to ``dtype`` (upcast of bf16/fp16)."""
        conv = {
            k: getattr(self, k).to(device=device, dtype=dtype)
            for k in ("W_Q", "W_K", "W_V", "W_O", "M_out")
        }
        parts = tuple(p.to(device=device, dtype=dtype) for p in self.M_in_parts)
        return LayerWeights(
            index=self.index, names=self.names, extras=self.extras, gated=self.gated,
            M_in=None if parts else self.M_in.to(device=device, dtype=dtype),  # type: ignore[arg-type]
            M_in_parts=parts, **conv,
        )


class TransformerWeights:
    """A model's weights, handed out one layer at a time.

    ``layer_loader(i)`` returns :class:`LayerWeights` for layer ``i``; sources read the
    underlying tensors lazily, so iterating holds one layer's matrices at a time.
    """

    def __init__(
        self,
        info: ModelInfo,
        layer_loader: Callable[[int], LayerWeights],
        source_tensors: dict[str, tuple[int, ...]] | None = None,
    ):
        self.info = info
        self._loader = layer_loader
        #: every tensor of the source with its shape, when known (to report what was not analysed)
        self.source_tensors = source_tensors

    def layer(self, i: int) -> LayerWeights:
        if not 0 <= i < self.info.n_layers:
            raise IndexError(f"layer {i} out of range 0..{self.info.n_layers - 1}")
        lw = self._loader(i)
        lw.validate(self.info)
        return lw

    def layers(self) -> Iterator[LayerWeights]:
        for i in range(self.info.n_layers):
            yield self.layer(i)

    @classmethod
    def from_layers(cls, info: ModelInfo, layers: list[LayerWeights]) -> "TransformerWeights":
        """Wrap in-memory layers (e.g. a model built in this process)."""
        if len(layers) != info.n_layers:
            raise InputError(
                f"{info.source}: {len(layers)} layers given but n_layers = {info.n_layers}."
            )
        return cls(info, lambda i: layers[i])
