"""Builders of small checkpoints on disk, shared by the tests (importable: pytest pythonpath)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _bert_state(L: int, N: int, H: int, F: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {"embeddings.word_embeddings.weight": torch.randn(20, N, generator=g)}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            sd[p + name + ".weight"] = torch.randn(N, N, generator=g) / N**0.5
            sd[p + name + ".bias"] = torch.randn(N, generator=g)
        sd[p + "intermediate.dense.weight"] = torch.randn(F, N, generator=g) / N**0.5
        sd[p + "output.dense.weight"] = torch.randn(N, F, generator=g) / F**0.5
    return sd


def bert_config(L: int = 2, N: int = 16, H: int = 4, F: int = 24) -> dict:
    return {"model_type": "bert", "num_hidden_layers": L, "hidden_size": N, "num_attention_heads": H,
            "intermediate_size": F, "hidden_act": "gelu"}


def write_bert(folder: Path, L: int = 2, N: int = 16, H: int = 4, F: int = 24, seed: int = 0,
               state: dict[str, torch.Tensor] | None = None) -> Path:
    """A random BERT-shaped checkpoint (config.json + model.safetensors) in ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sd = state if state is not None else _bert_state(L, N, H, F, seed)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(bert_config(L, N, H, F)))
    return folder
