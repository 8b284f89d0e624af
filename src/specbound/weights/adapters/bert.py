"""BERT family: ``bert``, ``roberta``, ``electra`` (MiniLM is a BERT).

Tensor names (base model, after any ``bert.``/``roberta.``/``electra.`` prefix)::

    encoder.layer.{i}.attention.self.{query,key,value}.weight   [H·d_h, N]  nn.Linear
    encoder.layer.{i}.attention.output.dense.weight              [N, H·d_h]
    encoder.layer.{i}.intermediate.dense.weight                  [d_ff, N]
    encoder.layer.{i}.output.dense.weight                        [N, d_ff]

Post-norm, absolute positions, GELU: the paper's model, so no notes are attached.
"""

from __future__ import annotations

from specbound.weights.adapters.base import Adapter, cfg_int
from specbound.weights.canonical import LayerWeights, ModelInfo


class BertAdapter(Adapter):
    model_types = ("bert", "roberta", "electra")
    probe = "encoder.layer.0.attention.self.query.weight"

    def info(self) -> ModelInfo:
        c, src = self.config, self.src.description
        N = cfg_int(c, "hidden_size", source=src)
        H = cfg_int(c, "num_attention_heads", source=src)
        return ModelInfo(
            model_type=str(c.get("model_type", "bert")),
            n_layers=cfg_int(c, "num_hidden_layers", source=src),
            d_model=N,
            n_heads=H,
            n_kv_heads=H,
            d_head=self.heads(H, N, src),
            d_ff=cfg_int(c, "intermediate_size", source=src),
            source=src,
            activation=str(c.get("hidden_act", "gelu")),
        )

    def layer(self, info: ModelInfo, i: int) -> LayerWeights:
        p = f"encoder.layer.{i}."
        names = {
            "W_Q": p + "attention.self.query.weight",
            "W_K": p + "attention.self.key.weight",
            "W_V": p + "attention.self.value.weight",
            "W_O": p + "attention.output.dense.weight",
            "M_in": p + "intermediate.dense.weight",
            "M_out": p + "output.dense.weight",
        }
        return self.linear_layer(info, i, names)
