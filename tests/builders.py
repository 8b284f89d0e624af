"""The one place that builds models for the tests (importable: pytest pythonpath):

* :func:`make_model`: an in-memory :class:`TransformerWeights` of any shape (float64, seeded);
* :func:`write_bert`: a random BERT-shaped checkpoint on disk (config.json + model.safetensors);
* :func:`build`: a tiny random-initialised ``transformers`` model of one of :data:`FAMILIES`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from specbound.weights.canonical import LayerWeights, ModelInfo, TransformerWeights


def make_model(L: int = 2, N: int = 12, H: int = 3, Hkv: int = 3, dh: int = 4, F: int = 10, seed: int = 0,
               scale: float = 1.0) -> TransformerWeights:
    """Canonical weights with N(0, scale²) entries: ``W_Q [H, N, dh]``, ``W_K``/``W_V [Hkv, N, dh]``,
    ``W_O [H, dh, N]``, ``M_in [N, F]``, ``M_out [F, N]``."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    layers = [
        LayerWeights(i, W_Q=r(H, N, dh), W_K=r(Hkv, N, dh), W_V=r(Hkv, N, dh), W_O=r(H, dh, N),
                     M_in=r(N, F), M_out=r(F, N))
        for i in range(L)
    ]
    info = ModelInfo("test", L, N, H, Hkv, dh, F, source="test")
    return TransformerWeights.from_layers(info, layers)


def formed(tw: TransformerWeights) -> list[dict]:
    """Per layer: lists of numpy QK, OV (per query head), M_in, M_out, and the factor tensors."""
    info = tw.info
    grp = info.n_heads // info.n_kv_heads
    out = []
    for i in range(info.n_layers):
        lw = tw.layer(i)
        out.append({
            "QK": [(lw.W_Q[h] @ lw.W_K[h // grp].T).numpy() for h in range(info.n_heads)],
            "OV": [(lw.W_V[h // grp] @ lw.W_O[h]).numpy() for h in range(info.n_heads)],
            "M_in": [lw.M_in.numpy()], "M_out": [lw.M_out.numpy()], "lw": lw,
        })
    return out


def transform(tw: TransformerWeights, fn: Callable[[LayerWeights], LayerWeights]) -> TransformerWeights:
    """``tw`` with ``fn`` applied to every layer."""
    return TransformerWeights.from_layers(tw.info, [fn(tw.layer(i)) for i in range(tw.info.n_layers)])


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


# -- tiny transformers models of every adapter family ---------------------------------------
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
    """A tiny random model of ``family`` (N = 32, H = 4, L = 2, a 50-token vocabulary; every
    parameter, biases and norms included, redrawn from N(0, 1) so that no matrix is accidentally
    zero or the identity); ``task=True`` gives the task model (prefixed keys)."""
    import transformers as t
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


def bert_mapping(L: int = 2, N: int = 16, H: int = 4) -> dict:
    """The custom mapping (``--mapping``) of a BERT checkpoint's tensor names."""
    return {
        "L": L, "N": N, "H": H,
        "Q": "encoder.layer.{i}.attention.self.query.weight",
        "K": "encoder.layer.{i}.attention.self.key.weight",
        "V": "encoder.layer.{i}.attention.self.value.weight",
        "O": "encoder.layer.{i}.attention.output.dense.weight",
        "M_in": "encoder.layer.{i}.intermediate.dense.weight",
        "M_out": "encoder.layer.{i}.output.dense.weight",
    }


@contextlib.contextmanager
def no_hang(seconds: float, what: str = "the body") -> Iterator[None]:
    """Fail the test (instead of blocking the suite) if ``what`` runs longer than ``seconds``,
    e.g. ``open()`` on a FIFO (SIGALRM: main thread only, elsewhere no guard)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):  # pragma: no cover - only when the code under test blocks
        raise TimeoutError(f"{what} blocked (> {seconds} s)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
