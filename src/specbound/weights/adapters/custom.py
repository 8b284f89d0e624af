"""Custom models: tensor names given by a user mapping instead of a known ``model_type``.

A mapping is a dict, or a path to a small JSON file holding one::

    {
      "L": 6, "N": 384, "H": 12,                    # required positive integers
      "H_kv": 12,                                   # optional, default H
      "d_h": 32,                                    # optional, default N / H
      "layout": "linear",                           # "linear" (default) or "conv1d"
      "activation": "gelu",                         # optional, default "gelu"
      "model_type": "my-model",                     # optional label, default "custom"
      "Q": "encoder.layer.{i}.attention.self.query.weight",
      "K": "encoder.layer.{i}.attention.self.key.weight",
      "V": "encoder.layer.{i}.attention.self.value.weight",
      "O": "encoder.layer.{i}.attention.output.dense.weight",
      "M_in": "encoder.layer.{i}.intermediate.dense.weight",   # or [gate, up] for a gated MLP
      "M_out": "encoder.layer.{i}.output.dense.weight"
    }

``{i}`` in a template is the layer index. Templates name tensors of the base model; a common
prefix of task models (``bert.``, ``model.`` …) is found automatically from layer 0's ``Q``.

Stored shapes by layout (``linear`` is ``nn.Linear``, weight ``[out, in]``, row-vector matrix
``wᵀ``; ``conv1d`` is HF ``Conv1D``, weight ``[in, out]``, row-vector matrix ``w``):

=========  ===================  ===================
template   ``linear``           ``conv1d``
=========  ===================  ===================
``Q``      ``[H·d_h, N]``       ``[N, H·d_h]``
``K/V``    ``[H_kv·d_h, N]``    ``[N, H_kv·d_h]``
``O``      ``[N, H·d_h]``       ``[H·d_h, N]``
``M_in``   ``[d_ff, N]`` each   ``[N, d_ff]`` each
``M_out``  ``[N, d_ff]``        ``[d_ff, N]``
=========  ===================  ===================

``d_ff`` is read from the shape of layer 0's ``M_out``. A two-template ``M_in`` is a gated MLP:
``M_in = [first | second]`` column-wise (``[N, 2·d_ff]``), ``gated=True``. Every result carries
the note ``custom_mapping`` (and ``gated_mlp`` for gated MLPs).
"""

from __future__ import annotations

import difflib
import os
import re
import string
from pathlib import Path
from typing import Any

import torch

from specbound.errors import InputError
from specbound.weights.adapters.base import Adapter, split_columns, split_rows
from specbound.weights.canonical import NAME_SEPARATOR, LayerWeights, ModelInfo, Note
from specbound.weights.files import read_json
from specbound.weights.sources import TensorSource

_TEMPLATES = ("Q", "K", "V", "O", "M_in", "M_out")
_REQUIRED_INTS = ("L", "N", "H")
_OPTIONAL_INTS = ("H_kv", "d_h")
_OPTIONAL_STRS = ("layout", "activation", "model_type", "description")
_LAYOUTS = ("linear", "conv1d")
_ALLOWED = set(_TEMPLATES) | set(_REQUIRED_INTS) | set(_OPTIONAL_INTS) | set(_OPTIONAL_STRS)


def _load_mapping(mapping: Any) -> tuple[dict[str, Any], str]:
    """``(mapping dict, label for messages)`` from a dict or a JSON file path."""
    if isinstance(mapping, dict):
        return dict(mapping), "name mapping"
    if isinstance(mapping, (str, os.PathLike)):
        path = Path(mapping).expanduser()
        data = read_json(path, "name mapping")
        if not isinstance(data, dict):
            raise InputError(f"{path}: the name mapping must be a JSON object, got {type(data).__name__}.")
        return data, str(path)
    raise InputError(
        f"mapping must be a dict or a path to a JSON file, got {type(mapping).__name__}."
    )


def _check_template(label: str, field: str, t: Any) -> str:
    """A tensor-name template: a string whose only replacement field is a plain ``{i}`` (no
    format spec, conversion, attribute or index: ``{i:>300000000}`` would build a 300 MB name,
    ``{i[0]}`` fails on an int), literal braces doubled."""
    if not isinstance(t, str) or not t:
        raise InputError(f"{label}: field {field!r} must be a tensor-name template string, got {t!r}.")
    if len(t) > 1000:
        raise InputError(f"{label}: field {field!r} is {len(t)} characters long; a tensor-name template is a name.")
    try:
        parts = list(string.Formatter().parse(t))
    except ValueError as e:
        raise InputError(
            f"{label}: field {field!r} = {t!r} is not a valid template ({e}); only '{{i}}' may be "
            "used (write a literal brace as '{{' or '}}')."
        ) from None
    fields = [(name, spec, conv) for _, name, spec, conv in parts if name is not None]
    for name, spec, conv in fields:
        if name != "i" or spec or conv:
            whole = "{" + name + ("!" + conv if conv else "") + (":" + spec if spec else "") + "}"
            raise InputError(
                f"{label}: field {field!r} = {t!r} is not a valid template: it uses {whole!r}; "
                "only the plain layer index "
                "'{i}' may appear in a template (no format spec, conversion, attribute or index)."
            )
    if not fields:
        raise InputError(
            f"{label}: field {field!r} = {t!r} has no '{{i}}' placeholder for the layer index."
        )
    return t


def validate_mapping(m: dict[str, Any], label: str) -> dict[str, Any]:
    """Check a mapping's fields; return it normalised (``M_in`` a list, defaults filled in)."""
    unknown = sorted(set(m) - _ALLOWED)
    if unknown:
        raise InputError(
            f"{label}: unknown field(s) {', '.join(map(repr, unknown))}; allowed fields are "
            f"{', '.join(sorted(_ALLOWED))}."
        )
    missing = [f for f in (*_TEMPLATES, *_REQUIRED_INTS) if f not in m]
    if missing:
        raise InputError(
            f"{label}: missing required field(s) {', '.join(map(repr, missing))} (required: "
            f"{', '.join((*_TEMPLATES, *_REQUIRED_INTS))})."
        )
    out: dict[str, Any] = {}
    for f in (*_REQUIRED_INTS, *_OPTIONAL_INTS):
        if f not in m or (f in _OPTIONAL_INTS and m[f] is None):
            continue
        v = m[f]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InputError(f"{label}: field {f!r} must be a positive integer, got {v!r}.")
        out[f] = v
    for f in ("Q", "K", "V", "O", "M_out"):
        out[f] = _check_template(label, f, m[f])
    m_in = m["M_in"]
    if isinstance(m_in, str):
        m_in = [m_in]
    if not isinstance(m_in, list) or len(m_in) not in (1, 2):
        raise InputError(
            f"{label}: field 'M_in' must be a template or a list of two templates [gate, up] "
            f"for a gated MLP, got {m['M_in']!r}."
        )
    out["M_in"] = [_check_template(label, f"M_in[{j}]", t) for j, t in enumerate(m_in)]
    layout = m.get("layout", "linear")
    if layout not in _LAYOUTS:
        raise InputError(f"{label}: field 'layout' must be one of {', '.join(_LAYOUTS)}, got {layout!r}.")
    out["layout"] = layout
    for f in ("activation", "model_type", "description"):
        if f in m and not isinstance(m[f], str):
            raise InputError(f"{label}: field {f!r} must be a string, got {m[f]!r}.")
    out["activation"] = m.get("activation", "gelu")
    out["model_type"] = m.get("model_type", "custom")
    N, H = out["N"], out["H"]
    out.setdefault("H_kv", H)
    if "d_h" not in out:
        if N % H:
            raise InputError(
                f"{label}: H = {H} does not divide N = {N}; give the head width 'd_h' explicitly."
            )
        out["d_h"] = N // H
    if H % out["H_kv"]:
        raise InputError(
            f"{label}: H = {H} is not a multiple of H_kv = {out['H_kv']}."
        )
    return out


class MappingAdapter(Adapter):
    """Adapter driven by a validated name mapping (see the module docstring)."""

    model_types = ("custom",)

    def __init__(self, src: TensorSource, spec: dict[str, Any], label: str):
        self.spec = spec
        self.label = label
        self.probe = spec["Q"].format(i=0)  # type: ignore[misc]  # per-instance probe
        super().__init__(src, src.config or {})

    @classmethod
    def from_mapping(cls, src: TensorSource, mapping: Any) -> "MappingAdapter":
        """Build from a dict or a JSON file path; clear errors name the bad field and the file."""
        data, label = _load_mapping(mapping)
        return cls(src, validate_mapping(data, label), label)

    def find_prefix(self) -> str:
        keys = self._all_keys()
        if self.probe in set(keys):
            return ""
        hits = [k for k in keys if k.endswith("." + self.probe)]
        if hits:
            return min(hits, key=len)[: -len(self.probe)]
        close = difflib.get_close_matches(self.probe, keys, n=3)
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise InputError(
            f"{self.label}: template Q = {self.spec['Q']!r} gives {self.probe!r} for layer 0, "
            f"which is not a tensor of {self.src.description}.{hint}"
        )

    def _templates(self) -> list[str]:
        s = self.spec
        return [s["Q"], s["K"], s["V"], s["O"], *s["M_in"], s["M_out"]]

    def layer_patterns(self) -> list[re.Pattern[str]]:
        """One regex per template (each ``{i}`` → digits, group 1 the first), anchored at both
        ends, with the prefix."""
        pats = []
        for t in self._templates():
            rx = re.escape(self.prefix)
            for lit, name, _, _ in string.Formatter().parse(t):
                rx += re.escape(lit) + (r"(\d+)" if name is not None else "")
            pats.append(re.compile(rx + "$"))
        return pats

    def layer_probe(self, i: int) -> str | None:
        return self.spec["Q"].format(i=i)

    def _config_label(self) -> str:
        return self._desc().removeprefix("the ")

    def check(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """``t`` if it has ``shape``; otherwise an error naming the tensor and the mapping."""
        if tuple(t.shape) != shape:
            raise InputError(
                f"{self.src.description}: tensor {self.prefix + name!r} has shape "
                f"{tuple(t.shape)}, but {self._desc()} implies {shape} (layout "
                f"{self.spec['layout']!r}); fix L/N/H/H_kv/d_h/layout in the mapping."
            )
        return t

    def _desc(self) -> str:
        return "the name mapping" if self.label == "name mapping" else f"the name mapping {self.label}"

    def _shape(self, field: str, name: str) -> tuple[int, ...]:
        try:
            return self.src.shape(self.prefix + name)
        except KeyError:
            raise InputError(
                f"{self.label}: template {field} gives {self.prefix + name!r}, which is not a "
                f"tensor of {self.src.description}."
            ) from None

    def info(self) -> ModelInfo:
        s = self.spec
        out_shape = self._shape("M_out", s["M_out"].format(i=0))
        if len(out_shape) != 2:
            raise InputError(
                f"{self.label}: M_out tensor {self.prefix + s['M_out'].format(i=0)!r} has shape "
                f"{out_shape}, expected a matrix."
            )
        d_ff = out_shape[1] if s["layout"] == "linear" else out_shape[0]
        notes = [Note.of("custom_mapping", f"Mapping: {self.label}.")]
        if len(s["M_in"]) == 2:
            notes.append(Note.of("gated_mlp"))
        if s["H_kv"] < s["H"]:
            notes.append(Note.of("grouped_query_attention", f"H = {s['H']}, H_kv = {s['H_kv']}."))
        return ModelInfo(
            model_type=s["model_type"],
            n_layers=s["L"],
            d_model=s["N"],
            n_heads=s["H"],
            n_kv_heads=s["H_kv"],
            d_head=s["d_h"],
            d_ff=d_ff,
            source=self.src.description,
            activation=s["activation"],
            notes=notes,
        )

    def _rowvec(self, name: str, shape_rowvec: tuple[int, int]) -> torch.Tensor:
        """Tensor ``name`` as a row-vector ``[in, out]`` matrix of shape ``shape_rowvec``."""
        if self.spec["layout"] == "linear":
            return self.check(name, self.tensor(name), (shape_rowvec[1], shape_rowvec[0])).T
        return self.check(name, self.tensor(name), shape_rowvec)

    def layer(self, info: ModelInfo, i: int) -> LayerWeights:
        s = self.spec
        H, Hkv, N, dh, F = info.n_heads, info.n_kv_heads, info.d_model, info.d_head, info.d_ff
        q, k, v, o, m_out = (s[f].format(i=i) for f in ("Q", "K", "V", "O", "M_out"))
        m_in_names = [t.format(i=i) for t in s["M_in"]]
        names = {"W_Q": q, "W_K": k, "W_V": v, "W_O": o, "M_out": m_out}
        full = {key: self.prefix + n for key, n in names.items()}
        full["M_in"] = NAME_SEPARATOR.join(self.prefix + n for n in m_in_names)
        if s["layout"] == "conv1d":  # the head axis is the column axis: say so (measures.tensor_label)
            for key, width in (("W_Q", H * dh), ("W_K", Hkv * dh), ("W_V", Hkv * dh)):
                full[key] += f"[:, 0:{width}]"
        return LayerWeights(
            index=i,
            W_Q=split_columns(self._rowvec(q, (N, H * dh)), H, dh),
            W_K=split_columns(self._rowvec(k, (N, Hkv * dh)), Hkv, dh),
            W_V=split_columns(self._rowvec(v, (N, Hkv * dh)), Hkv, dh),
            W_O=split_rows(self._rowvec(o, (H * dh, N)), H, dh),
            # [N, d_ff] (| [N, d_ff]) → [N, d_ff] or [N, 2·d_ff]
            M_in=self._rowvec(m_in_names[0], (N, F)) if len(m_in_names) == 1 else None,  # type: ignore[arg-type]
            M_in_parts=tuple(self._rowvec(n, (N, F)) for n in m_in_names) if len(m_in_names) == 2 else (),
            M_out=self._rowvec(m_out, (F, N)),
            names=full,
            gated=len(m_in_names) == 2,
        )
