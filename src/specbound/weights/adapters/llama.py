"""LLaMA family: ``llama``, ``mistral``, ``qwen2`` (pre-norm RMSNorm, rotary, SwiGLU, GQA).

Tensor names (base model, after any ``model.`` prefix of task models), all ``nn.Linear``::

    layers.{i}.self_attn.q_proj.weight     [H·d_h, N]
    layers.{i}.self_attn.{k,v}_proj.weight [H_kv·d_h, N]
    layers.{i}.self_attn.o_proj.weight     [N, H·d_h]
    layers.{i}.mlp.{gate,up}_proj.weight   [d_ff, N]
    layers.{i}.mlp.down_proj.weight        [N, d_ff]

``H·d_h`` need not equal N when the config gives ``head_dim``. The gated MLP
``down(silu(x W_gate) ⊙ (x W_up))`` is represented by ``M_in = [W_gate | W_up]`` (row-vector,
``[N, 2·d_ff]``) and ``M_out`` = down projection (``[d_ff, N]``), with ``gated=True``. Qwen2's
q/k/v biases and the RMSNorm weights land in ``LayerWeights.extras`` (outside the proxy).
Notes: ``gated_mlp``, ``rotary``, ``pre_norm``, ``rms_norm`` and, when H_kv < H,
``grouped_query_attention``.
"""

from __future__ import annotations

from specbound.weights.adapters.base import Adapter, cfg_int
from specbound.weights.canonical import LayerWeights, ModelInfo, Note


class LlamaAdapter(Adapter):
    model_types = ("llama", "mistral", "qwen2")
    probe = "layers.0.self_attn.q_proj.weight"

    def info(self) -> ModelInfo:
        c, src = self.config, self.src.description
        N = cfg_int(c, "hidden_size", source=src)
        H = cfg_int(c, "num_attention_heads", source=src)
        H_kv = cfg_int(c, "num_key_value_heads", source=src, default=H)
        if c.get("head_dim") is not None:
            d_h = cfg_int(c, "head_dim", source=src)
        else:
            d_h = self.heads(H, N, src)
        notes = [Note.of("gated_mlp"), Note.of("rotary")]
        if H_kv < H:
            notes.append(Note.of("grouped_query_attention", f"H = {H}, H_kv = {H_kv}."))
        notes += [Note.of("pre_norm"), Note.of("rms_norm")]
        return ModelInfo(
            model_type=str(c.get("model_type", "llama")),
            n_layers=cfg_int(c, "num_hidden_layers", source=src),
            d_model=N,
            n_heads=H,
            n_kv_heads=H_kv,
            d_head=d_h,
            d_ff=cfg_int(c, "intermediate_size", source=src),
            source=src,
            activation=str(c.get("hidden_act") or "silu"),
            notes=notes,
        )

    def layer(self, info: ModelInfo, i: int) -> LayerWeights:
        p = f"layers.{i}."
        H, Hkv, N, F = info.n_heads, info.n_kv_heads, info.d_model, info.d_ff
        gate, up = p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"
        names = {
            "W_Q": p + "self_attn.q_proj.weight",
            "W_K": p + "self_attn.k_proj.weight",
            "W_V": p + "self_attn.v_proj.weight",
            "W_O": p + "self_attn.o_proj.weight",
            "M_out": p + "mlp.down_proj.weight",
        }
        full = {key: self.prefix + n for key, n in names.items()}
        full["M_in"] = f"{self.prefix}{gate} | {self.prefix}{up}"
        return LayerWeights(
            index=i,
            W_Q=self.head_proj(names["W_Q"], info, H),
            W_K=self.head_proj(names["W_K"], info, Hkv),
            W_V=self.head_proj(names["W_V"], info, Hkv),
            W_O=self.out_proj(names["W_O"], info),
            # [N, d_ff] | [N, d_ff] → [N, 2·d_ff], kept as two blocks (never concatenated)
            M_in=None,
            M_in_parts=(self.ff_proj(gate, (F, N)), self.ff_proj(up, (F, N))),
            M_out=self.ff_proj(names["M_out"], (N, F)),
            names=full,
            gated=True,
        )
