"""What every architecture adapter shares: config access, key-prefix detection, head splitting.

An adapter turns tensor names of one architecture family into :class:`LayerWeights`. It is the
only place that knows names. Subclasses set ``model_types`` and implement ``info`` and
``layer``; ``probe`` is the name (relative to the base model) of a tensor every checkpoint of
the family has in layer 0, used to find the key prefix of task models (``bert.``, ``model.``…).
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

import torch

from specbound.errors import InputError
from specbound.weights.canonical import LayerWeights, ModelInfo, TransformerWeights, split_names
from specbound.weights.sources import TensorSource


def cfg_int(config: dict[str, Any], *keys: str, source: str, default: int | None = None) -> int:
    """The first of ``keys`` present in ``config`` as an int; a clear error when none is."""
    for k in keys:
        v = config.get(k)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, int):
                raise InputError(f"{source}: config field {k!r} must be an integer, got {v!r}.")
            return v
    if default is not None:
        return default
    raise InputError(f"{source}: the config has none of the fields {', '.join(keys)}; fix config.json.")


def split_columns(w_rowvec: torch.Tensor, n_heads: int, d_head: int) -> torch.Tensor:
    """``[N, H·d_h]`` row-vector projection → ``[H, N, d_h]`` (head h takes columns h·d_h:(h+1)·d_h)."""
    n = w_rowvec.shape[0]
    return w_rowvec.reshape(n, n_heads, d_head).permute(1, 0, 2)


def split_rows(w_rowvec: torch.Tensor, n_heads: int, d_head: int) -> torch.Tensor:
    """``[H·d_h, N]`` row-vector output projection → ``[H, d_h, N]`` (head h takes rows h·d_h:…)."""
    return w_rowvec.reshape(n_heads, d_head, w_rowvec.shape[-1])


class Adapter:
    """Base class of the architecture adapters (one module per family)."""

    model_types: ClassVar[tuple[str, ...]] = ()
    probe: ClassVar[str] = ""

    def __init__(self, src: TensorSource, config: dict[str, Any]):
        self.src = src
        self.config = config
        self._keys: list[str] | None = None
        self.prefix = self.find_prefix()

    # -- helpers ---------------------------------------------------------------------------
    def find_prefix(self) -> str:
        """The key prefix in front of ``probe`` (``""`` for a base model, ``"bert."`` …)."""
        hits = [k for k in self.src.keys() if k == self.probe or k.endswith("." + self.probe)]
        if not hits:
            raise InputError(
                f"{self.src.description}: no tensor named like {self.probe!r}; the checkpoint does "
                f"not look like a {self.model_types[0]} model (or its config names the wrong "
                "model_type). Pass a name mapping (--mapping) for custom models."
            )
        return min(hits, key=len)[: -len(self.probe)]

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``prefix + name``; a missing tensor is named in the error."""
        full = self.prefix + name
        try:
            return self.src.get(full)
        except KeyError:
            raise InputError(
                f"{self.src.description}: tensor {full!r} is missing; the checkpoint is incomplete "
                "or its config has more layers than the file. Re-export it."
            ) from None

    def check(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """``t`` if it has ``shape``; otherwise an error naming the tensor and the config."""
        if tuple(t.shape) != shape:
            raise InputError(
                f"{self.src.description}: tensor {self.prefix + name!r} has shape {tuple(t.shape)}, "
                f"but the config implies {shape}; the config does not match the checkpoint."
            )
        return t

    def head_proj(self, name: str, info: ModelInfo, n_heads: int) -> torch.Tensor:
        """``nn.Linear`` Q/K/V weight ``[n_heads·d_h, N]`` → row-vector per head ``[n_heads, N, d_h]``."""
        w = self.check(name, self.tensor(name), (n_heads * info.d_head, info.d_model))
        return split_columns(w.T, n_heads, info.d_head)

    def out_proj(self, name: str, info: ModelInfo) -> torch.Tensor:
        """``nn.Linear`` output weight ``[N, H·d_h]`` → row-vector per head ``[H, d_h, N]``."""
        w = self.check(name, self.tensor(name), (info.d_model, info.n_heads * info.d_head))
        return split_rows(w.T, info.n_heads, info.d_head)

    def ff_proj(self, name: str, shape_out_in: tuple[int, int]) -> torch.Tensor:
        """``nn.Linear`` feed-forward weight ``[out, in]`` → row-vector ``[in, out]``."""
        return self.check(name, self.tensor(name), shape_out_in).T

    def linear_layer(self, info: ModelInfo, i: int, names: dict[str, str]) -> LayerWeights:
        """Layer ``i`` of an unfused, ungated ``nn.Linear`` layout (BERT, DistilBERT).

        ``names`` maps ``W_Q, W_K, W_V, W_O, M_in, M_out`` to tensor names (without prefix).
        """
        H, N, F = info.n_heads, info.d_model, info.d_ff
        return LayerWeights(
            index=i,
            W_Q=self.head_proj(names["W_Q"], info, H),
            W_K=self.head_proj(names["W_K"], info, H),
            W_V=self.head_proj(names["W_V"], info, H),
            W_O=self.out_proj(names["W_O"], info),
            M_in=self.ff_proj(names["M_in"], (F, N)),
            M_out=self.ff_proj(names["M_out"], (N, F)),
            names={k: self.prefix + v for k, v in names.items()},
        )

    def heads(self, n_heads: int, d_model: int, source: str) -> int:
        if n_heads <= 0 or d_model <= 0:
            which = "head count" if n_heads <= 0 else "hidden size"
            raise InputError(
                f"{source}: the {which} {n_heads if n_heads <= 0 else d_model} must be a positive "
                "integer; fix num_attention_heads / hidden_size in the config."
            )
        if d_model % n_heads:
            raise InputError(
                f"{source}: the head count {n_heads} does not divide the hidden size {d_model}; "
                "fix num_attention_heads in the config (or give head_dim explicitly)."
            )
        return d_model // n_heads

    # -- interface -------------------------------------------------------------------------
    def info(self) -> ModelInfo:
        raise NotImplementedError

    def layer(self, info: ModelInfo, i: int) -> LayerWeights:
        raise NotImplementedError

    def weights(self) -> TransformerWeights:
        info = self.info()
        self.check_layer_count(info)
        shapes = {k: self.src.shape(k) for k in self.src.keys()}
        return TransformerWeights(
            info, lambda i: self.with_extras(self.layer(info, i)), source_tensors=shapes
        )

    # -- the layers of the file against the config ------------------------------------------
    def layer_patterns(self) -> list[re.Pattern[str]]:
        """Regexes whose group 1 is the layer index of a tensor name of this layout (with the
        prefix): the part of :attr:`probe` before its ``.0.`` (``encoder.layer.``, ``h.``,
        ``layers.`` …) followed by digits and a dot."""
        at = ("." + self.probe).find(".0.")
        if at < 0:
            return []
        head = self.probe[:at]  # "encoder.layer." (the probe with its leading "." removed)
        return [re.compile(re.escape(self.prefix + head) + r"(\d+)\.")]

    def layer_probe(self, i: int) -> str | None:
        """The name of :attr:`probe` in layer ``i`` (``None`` when the probe has no layer index)."""
        at = ("." + self.probe).find(".0.")
        if at < 0:
            return None
        return self.probe[:at] + f"{i}." + self.probe[at + 2:]

    def check_layer_count(self, info: ModelInfo) -> None:
        """The file's layers against the config's ``L``: a tensor of a layer ``≥ L`` is an error
        (the config would silently analyse part of the model), and so is a last layer ``L − 1``
        whose probe tensor is absent (the config promises more layers than the file has)."""
        pats = self.layer_patterns()
        extra: dict[int, str] = {}
        for k in self._all_keys():
            for pat in pats:
                m = pat.match(k)
                if m and int(m.group(1)) >= info.n_layers:
                    extra.setdefault(int(m.group(1)), k)
        if extra:
            top = max(extra)
            raise InputError(
                f"{self.src.description}: tensor {extra[top]!r} belongs to layer {top}, but the "
                f"{self._config_label()} says {info.n_layers} layer(s) (0..{info.n_layers - 1}); "
                f"the file has at least {top + 1}: fix the layer count."
            )
        last = self.layer_probe(info.n_layers - 1)
        if last is not None and self.prefix + last not in set(self._all_keys()):
            raise InputError(
                f"{self.src.description}: tensor {self.prefix + last!r} is missing; the checkpoint "
                f"is incomplete or its {self._config_label()} has more layers ({info.n_layers}) than "
                "the file. Fix the layer count or re-export it."
            )

    def _config_label(self) -> str:
        return "config"

    # -- tensors outside the proxy -----------------------------------------------------------
    def layer_key_prefix(self, lw: LayerWeights) -> str | None:
        """The full key prefix of layer ``lw.index`` (``"bert.encoder.layer.3."``), or ``None``.

        Derived from the names the proxy matrices were read from: their longest common dotted
        prefix, accepted only if it ends in the layer index (``….{i}.``).
        """
        names = [n for v in lw.names.values() for n in split_names(v)]
        if not names:
            return None
        common = os.path.commonprefix(names)
        common = common[: common.rfind(".") + 1]
        return common if common.endswith(f".{lw.index}.") or common == f"{lw.index}." else None

    def with_extras(self, lw: LayerWeights) -> LayerWeights:
        """Attach the layer's 1-D tensors (biases, LayerNorm/RMSNorm parameters) to ``lw.extras``.

        They are outside the proxies and labelled by their full tensor names. Everything under
        the layer's key prefix with one dimension is taken; when no layer prefix can be derived
        (custom mappings with unrelated names) the ``.bias`` siblings of the proxy tensors are.
        Only 1-D tensors are read, so this costs O(N + d_ff) memory per layer.
        """
        prefix = self.layer_key_prefix(lw)
        if prefix is not None:
            cands = [k for k in self._all_keys() if k.startswith(prefix)]
        else:
            cands = [
                n[: -len(".weight")] + ".bias"
                for v in lw.names.values()
                for n in split_names(v)
                if n.endswith(".weight")
            ]
            known = set(self._all_keys())
            cands = [k for k in cands if k in known]
        for k in cands:
            if k not in lw.extras and len(self.src.shape(k)) == 1:
                lw.extras[k] = self.src.get(k)
        return lw

    def _all_keys(self) -> list[str]:
        if self._keys is None:
            self._keys = sorted(self.src.keys())
        return self._keys
