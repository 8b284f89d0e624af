"""GPT-2: ``gpt2``.

Tensor names (base model, after any ``transformer.`` prefix of task models). Every weight is
an HF ``Conv1D``, stored ``(in, out)`` and mapping ``x ↦ x w``, so the stored tensor *is* the
row-vector matrix (no transpose)::

    h.{i}.attn.c_attn.weight    [N, 3·H·d_h]   fused [Q | K | V] (columns 0:N, N:2N, 2N:3N)
    h.{i}.attn.c_proj.weight    [H·d_h, N]     output projection (rows h·d_h:(h+1)·d_h read head h)
    h.{i}.mlp.c_fc.weight       [N, d_ff]      M_in
    h.{i}.mlp.c_proj.weight     [d_ff, N]      M_out

Config fields ``n_embd`` (N), ``n_head`` (H), ``n_layer`` (L), ``n_inner`` (d_ff; ``None`` means
4·N), ``activation_function``. Pre-norm LayerNorm blocks: note ``pre_norm``.
"""

from __future__ import annotations

from specbound.weights.adapters.base import Adapter, cfg_int, split_columns, split_rows
from specbound.weights.canonical import LayerWeights, ModelInfo, Note


class GPT2Adapter(Adapter):
    model_types = ("gpt2",)
    probe = "h.0.attn.c_attn.weight"

    def info(self) -> ModelInfo:
        c, src = self.config, self.src.description
        N = cfg_int(c, "n_embd", "hidden_size", source=src)
        H = cfg_int(c, "n_head", "num_attention_heads", source=src)
        return ModelInfo(
            model_type=str(c.get("model_type", "gpt2")),
            n_layers=cfg_int(c, "n_layer", "num_hidden_layers", source=src),
            d_model=N,
            n_heads=H,
            n_kv_heads=H,
            d_head=self.heads(H, N, src),
            d_ff=cfg_int(c, "n_inner", source=src, default=4 * N),
            source=src,
            activation=str(c.get("activation_function") or "gelu_new"),
            notes=[Note.of("pre_norm")],
        )

    def layer(self, info: ModelInfo, i: int) -> LayerWeights:
        p = f"h.{i}."
        H, N, F, dh = info.n_heads, info.d_model, info.d_ff, info.d_head
        qkv_name = p + "attn.c_attn.weight"
        names = {
            "W_Q": qkv_name + "[:, 0:N]",
            "W_K": qkv_name + "[:, N:2N]",
            "W_V": qkv_name + "[:, 2N:3N]",
            "W_O": p + "attn.c_proj.weight",
            "M_in": p + "mlp.c_fc.weight",
            "M_out": p + "mlp.c_proj.weight",
        }
        qkv = self.check(qkv_name, self.tensor(qkv_name), (N, 3 * H * dh))  # [N, 3N] row-vector
        q, k, v = qkv.split(H * dh, dim=1)  # each [N, H·d_h]
        w_o = self.check(names["W_O"], self.tensor(names["W_O"]), (H * dh, N))
        return LayerWeights(
            index=i,
            W_Q=split_columns(q, H, dh),
            W_K=split_columns(k, H, dh),
            W_V=split_columns(v, H, dh),
            W_O=split_rows(w_o, H, dh),
            M_in=self.check(names["M_in"], self.tensor(names["M_in"]), (N, F)),
            M_out=self.check(names["M_out"], self.tensor(names["M_out"]), (F, N)),
            names={key: self.prefix + n for key, n in names.items()},
        )
