"""Tiny random-initialised transformers models for the weights tests (imported by conftest).

Every model has N = 32, H = 4, L = 2 and a 50-token vocabulary so that building and saving all
of them takes well under a second. All parameters (biases and norm weights included) are
redrawn from N(0, 1) so that no matrix is accidentally zero or the identity.
"""

from __future__ import annotations

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")
logging.getLogger("transformers").setLevel(logging.ERROR)
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

N, H, L, FF, VOCAB, POS = 32, 4, 2, 48, 50, 16
_TOK = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=0, eos_token_id=0)


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype))
    return model.eval()


def _bert_cfg(**kw):
    base = dict(hidden_size=N, num_attention_heads=H, num_hidden_layers=L, intermediate_size=FF,
                max_position_embeddings=POS, **_TOK)
    base.update(kw)
    return base


def _llama_cfg(**kw):
    base = dict(hidden_size=N, num_attention_heads=H, num_key_value_heads=2, num_hidden_layers=L,
                intermediate_size=FF, max_position_embeddings=POS, **_TOK)
    base.update(kw)
    return base


def build(family: str, task: bool = False, seed: int = 0) -> torch.nn.Module:
    """A tiny random model of ``family``; ``task=True`` gives the task model (prefixed keys)."""
    t = transformers
    if family == "bert":
        cls = t.BertForSequenceClassification if task else t.BertModel
        m = cls(t.BertConfig(**_bert_cfg()))
    elif family == "roberta":
        m = t.RobertaModel(t.RobertaConfig(**_bert_cfg(max_position_embeddings=POS + 2)))
    elif family == "distilbert":
        cls = t.DistilBertForSequenceClassification if task else t.DistilBertModel
        m = cls(t.DistilBertConfig(vocab_size=VOCAB, pad_token_id=0, dim=N, n_heads=H, n_layers=L,
                                   hidden_dim=FF, max_position_embeddings=POS))
    elif family == "gpt2":
        cls = t.GPT2LMHeadModel if task else t.GPT2Model
        m = cls(t.GPT2Config(n_embd=N, n_head=H, n_layer=L, n_positions=POS, **_TOK))  # n_inner None
    elif family == "gpt2_inner":
        m = t.GPT2Model(t.GPT2Config(n_embd=N, n_head=H, n_layer=L, n_positions=POS, n_inner=FF, **_TOK))
    elif family == "llama":
        cls = t.LlamaForCausalLM if task else t.LlamaModel
        m = cls(t.LlamaConfig(**_llama_cfg()))
    elif family == "llama_mha":
        m = t.LlamaModel(t.LlamaConfig(**_llama_cfg(num_key_value_heads=H)))
    elif family == "llama_headdim":  # H·d_h = 64 ≠ N = 32
        m = t.LlamaModel(t.LlamaConfig(**_llama_cfg(head_dim=16)))
    elif family == "mistral":
        m = t.MistralModel(t.MistralConfig(**_llama_cfg()))
    elif family == "qwen2":
        m = t.Qwen2Model(t.Qwen2Config(**_llama_cfg()))
    else:
        raise ValueError(family)
    return _randomise(m, seed)


FAMILIES = ["bert", "roberta", "distilbert", "gpt2", "gpt2_inner", "llama", "llama_mha",
            "llama_headdim", "mistral", "qwen2"]
