"""Builders of the data-side tests: tiny checkpoints on disk (from tests/builders.py), a
word-level tokenizer written into a folder, and pure recomputations of P and S from weights
and hidden states (the independent side of tests/data/test_attention_capture.py)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from builders import build

WORDS = ["the", "model", "maps", "sentences", "to", "vectors", "and", "can", "be", "used", "for", "search",
         "a", "of", "is", "it", "on", "in", "text", "data"]


def write_tokenizer(folder: Path) -> Path:
    """A BERT WordPiece tokenizer over :data:`WORDS` (ids < 30, inside the tiny models' vocabulary)."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab), do_lower_case=True).save_pretrained(str(folder))
    return folder


def tiny_checkpoint(folder: Path, family: str = "bert", tokenizer: bool = False, seed: int = 0) -> Path:
    if not (folder / "config.json").exists():
        build(family, seed=seed).save_pretrained(folder)
    if tokenizer:
        write_tokenizer(folder)
    return folder


def softmax_masked(s: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """``softmax(S·scale + mask)`` over the last axis, ``S [..., t, t]``."""
    z = s * scale
    if causal:
        t = s.shape[-1]
        z = z.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -math.inf)
    return torch.softmax(z, -1)


def rotate(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding of ``x [H, t, d]`` at positions 0..t-1 (the half-split convention)."""
    t, d = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * torch.cos(ang) + torch.cat([-x2, x1], -1) * torch.sin(ang)


def hand_qk(model: torch.nn.Module, family: str, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q ``[H, t, d]`` and K ``[H, t, d]`` (K of each query head's KV group) of ``layer`` from the
    weights and the hidden state ``x [t, N]`` entering it, float64."""
    c = model.config
    x = x.double()
    if family == "bert":
        a = model.encoder.layer[layer].attention.self
        H = c.num_attention_heads
        q = x @ a.query.weight.double().T + a.query.bias.double()
        k = x @ a.key.weight.double().T + a.key.bias.double()
        d = q.shape[-1] // H
        return q.view(-1, H, d).transpose(0, 1), k.view(-1, H, d).transpose(0, 1)
    if family == "gpt2":
        blk = model.h[layer]
        h = torch.nn.functional.layer_norm(x, (x.shape[-1],), blk.ln_1.weight.double(), blk.ln_1.bias.double(),
                                           blk.ln_1.eps)
        qkv = h @ blk.attn.c_attn.weight.double() + blk.attn.c_attn.bias.double()  # Conv1D: x W + b
        N, H = c.n_embd, c.n_head
        q, k = qkv[:, :N], qkv[:, N:2 * N]
        d = N // H
        return q.view(-1, H, d).transpose(0, 1), k.view(-1, H, d).transpose(0, 1)
    if family == "llama":
        blk = model.layers[layer]
        w = blk.input_layernorm.weight.double()
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + blk.input_layernorm.variance_epsilon) * w
        H, Hkv, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        q = (h @ blk.self_attn.q_proj.weight.double().T).view(-1, H, d).transpose(0, 1)
        k = (h @ blk.self_attn.k_proj.weight.double().T).view(-1, Hkv, d).transpose(0, 1)
        theta = c.rope_parameters["rope_theta"]
        q, k = rotate(q, theta), rotate(k, theta)
        return q, k[torch.arange(H) // (H // Hkv)]
    raise ValueError(family)
