"""DistilBERT: ``distilbert``.

Tensor names (base model, after any ``distilbert.`` prefix of task models)::

    transformer.layer.{i}.attention.{q_lin,k_lin,v_lin}.weight   [H·d_h, N]  nn.Linear
    transformer.layer.{i}.attention.out_lin.weight               [N, H·d_h]
    transformer.layer.{i}.ffn.lin1.weight                         [d_ff, N]
    transformer.layer.{i}.ffn.lin2.weight                         [N, d_ff]

Config fields ``dim`` (N), ``n_heads`` (H), ``n_layers`` (L), ``hidden_dim`` (d_ff),
``activation``. Post-norm, absolute positions, GELU: the paper's model, so no notes.
"""

from __future__ import annotations

from specbound.weights.adapters.base import Adapter, cfg_int
from specbound.weights.canonical import LayerWeights, ModelInfo


class DistilBertAdapter(Adapter):
    model_types = ("distilbert",)
    probe = "transformer.layer.0.attention.q_lin.weight"

    def info(self) -> ModelInfo:
        c, src = self.config, self.src.description
        N = cfg_int(c, "dim", "hidden_size", source=src)
        H = cfg_int(c, "n_heads", "num_attention_heads", source=src)
        return ModelInfo(
            model_type=str(c.get("model_type", "distilbert")),
            n_layers=cfg_int(c, "n_layers", "num_hidden_layers", source=src),
            d_model=N,
            n_heads=H,
            n_kv_heads=H,
            d_head=self.heads(H, N, src),
            d_ff=cfg_int(c, "hidden_dim", "intermediate_size", source=src),
            source=src,
            activation=str(c.get("activation") or "gelu"),
        )

    def layer(self, info: ModelInfo, i: int) -> LayerWeights:
        p = f"transformer.layer.{i}."
        names = {
            "W_Q": p + "attention.q_lin.weight",
            "W_K": p + "attention.k_lin.weight",
            "W_V": p + "attention.v_lin.weight",
            "W_O": p + "attention.out_lin.weight",
            "M_in": p + "ffn.lin1.weight",
            "M_out": p + "ffn.lin2.weight",
        }
        return self.linear_layer(info, i, names)
