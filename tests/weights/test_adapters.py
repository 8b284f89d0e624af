"""Adapters against the models' own modules: every canonical matrix of every layer and head.

For each family a tiny random model is saved with ``save_pretrained`` (safetensors), read back
with :func:`open_weights`, and compared with matrices formed directly from the model's modules
(`Ref` below), in two independent ways:

* matrix identities of ``bounds.md`` §1 (``QK = q[hs].T @ k[hs]``, ``OV = v[hs].T @ o.T[hs]``,
  GPT-2 via the module's own ``c_attn`` split, LLaMA via ``h // num_key_value_groups``);
* behaviour: calling the module on random rows ``x`` (bias removed) equals ``x @`` the
  canonical matrix, so the row-vector orientation is checked against ``forward`` itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import FAMILIES, FF, H, L, N, bert_mapping, build
from hypothesis import given, settings
from hypothesis import strategies as st

from specbound.errors import InputError
from specbound.weights.adapters import open_weights, registry, supported_model_types
from specbound.weights.adapters.custom import MappingAdapter
from specbound.weights.canonical import LayerWeights, TransformerWeights
from specbound.weights.sources import open_source


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 round-off relative to the magnitude of ``b`` (weights are N(0, 1))."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, b.abs().max().item()))


def _base(model: torch.nn.Module) -> torch.nn.Module:
    """The base model inside a task model (``bert``, ``distilbert``, ``transformer``, ``model``)."""
    for attr in ("bert", "roberta", "distilbert", "transformer", "model"):
        sub = getattr(model, attr, None)
        if isinstance(sub, torch.nn.Module) and not isinstance(model, type(sub)):
            if attr != "transformer" or hasattr(sub, "h"):
                return sub
    return model


def _no_bias(mod: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``mod(x)`` minus its bias: the linear part the canonical matrix must reproduce."""
    y = mod(x)
    return y - mod.bias if getattr(mod, "bias", None) is not None else y


class Ref:
    """Per-layer reference matrices and linear maps taken from a model's own modules.

    ``q(h)``/``k(g)``/``v(g)`` → ``[N, d_h]`` (row-vector), ``o(h)`` → ``[d_h, N]``,
    ``m_in`` → ``[N, d_ff or 2·d_ff]``, ``m_out`` → ``[d_ff, N]``; ``group`` = query heads per
    KV head; ``lin_q(x)`` etc. call the modules.
    """

    def __init__(self, family: str, model: torch.nn.Module, i: int):
        m = _base(model)
        self.family = family
        if family in ("bert", "roberta"):
            lay = m.encoder.layer[i]
            s = lay.attention.self
            self.dh, self.group = s.attention_head_size, 1
            self.mq, self.mk, self.mv = s.query, s.key, s.value
            self.mo = lay.attention.output.dense
            self.fin, self.fout = [lay.intermediate.dense], lay.output.dense
        elif family == "distilbert":
            a = m.transformer.layer[i].attention
            self.dh, self.group = a.attention_head_size, 1
            self.mq, self.mk, self.mv, self.mo = a.q_lin, a.k_lin, a.v_lin, a.out_lin
            f = m.transformer.layer[i].ffn
            self.fin, self.fout = [f.lin1], f.lin2
        elif family.startswith("gpt2"):
            blk = m.h[i]
            self.attn = blk.attn
            self.dh, self.group = blk.attn.head_dim, 1
            self.mo = blk.attn.c_proj
            self.fin, self.fout = [blk.mlp.c_fc], blk.mlp.c_proj
        else:  # llama family
            a = m.layers[i].self_attn
            self.dh, self.group = a.head_dim, a.num_key_value_groups
            self.mq, self.mk, self.mv, self.mo = a.q_proj, a.k_proj, a.v_proj, a.o_proj
            mlp = m.layers[i].mlp
            self.mlp = mlp
            self.fin, self.fout = [mlp.gate_proj, mlp.up_proj], mlp.down_proj
        self.conv1d = family.startswith("gpt2")

    def hs(self, h: int) -> slice:
        return slice(h * self.dh, (h + 1) * self.dh)

    # -- matrices (formulas of bounds.md §1) ---------------------------------------------------
    def _qkv_rowvec(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.conv1d:  # the model's own split of the fused Conv1D weight [N, 3N]
            return self.attn.c_attn.weight.split(self.attn.split_size, dim=1)
        return self.mq.weight.T, self.mk.weight.T, self.mv.weight.T

    def q(self, h: int) -> torch.Tensor:
        return self._qkv_rowvec()[0][:, self.hs(h)]

    def k(self, g: int) -> torch.Tensor:
        return self._qkv_rowvec()[1][:, self.hs(g)]

    def v(self, g: int) -> torch.Tensor:
        return self._qkv_rowvec()[2][:, self.hs(g)]

    def o(self, h: int) -> torch.Tensor:
        w = self.mo.weight if self.conv1d else self.mo.weight.T
        return w[self.hs(h), :]

    def QK(self, h: int) -> torch.Tensor:
        g = h // self.group
        if self.conv1d:
            return self.q(h) @ self.k(g).T
        return self.mq.weight[self.hs(h)].T @ self.mk.weight[self.hs(g)]

    def OV(self, h: int) -> torch.Tensor:
        g = h // self.group
        if self.conv1d:
            return self.v(g) @ self.mo.weight[self.hs(h)]
        return self.mv.weight[self.hs(g)].T @ self.mo.weight.T[self.hs(h)]

    @property
    def m_in(self) -> torch.Tensor:
        if self.conv1d:
            return self.fin[0].weight
        return torch.cat([f.weight.T for f in self.fin], dim=1)

    @property
    def m_out(self) -> torch.Tensor:
        return self.fout.weight if self.conv1d else self.fout.weight.T

    # -- the modules' forward ------------------------------------------------------------------
    def lin_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.conv1d:
            return _no_bias(self.attn.c_attn, x).split(self.attn.split_size, dim=-1)
        return _no_bias(self.mq, x), _no_bias(self.mk, x), _no_bias(self.mv, x)


def _layers(folder_or_src, **kw) -> tuple[TransformerWeights, list[LayerWeights]]:
    w = open_weights(folder_or_src, **kw)
    return w, list(w.layers())


def check_layer(lw: LayerWeights, ref: Ref, n_heads: int, n_kv: int) -> None:
    """Every canonical matrix of one layer equals the reference, by formula and by behaviour."""
    assert lw.W_Q.shape == (n_heads, N, ref.dh)
    assert lw.W_K.shape == (n_kv, N, ref.dh) and lw.W_V.shape == (n_kv, N, ref.dh)
    assert lw.W_O.shape == (n_heads, ref.dh, N)
    group = n_heads // n_kv
    assert group == ref.group
    for h in range(n_heads):
        g = h // group
        assert torch.equal(lw.W_Q[h], ref.q(h))
        assert torch.equal(lw.W_K[g], ref.k(g)) and torch.equal(lw.W_V[g], ref.v(g))
        assert torch.equal(lw.W_O[h], ref.o(h))
        assert close(lw.W_Q[h] @ lw.W_K[g].T, ref.QK(h))
        assert close(lw.W_V[g] @ lw.W_O[h], ref.OV(h))
    assert torch.equal(lw.M_in, ref.m_in)
    assert torch.equal(lw.M_out, ref.m_out)

    # behaviour: x A equals the module applied to x (bias removed)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, N, generator=g)
    with torch.no_grad():
        yq, yk, yv = ref.lin_qkv(x)
        for h in range(n_heads):
            assert close(yq[:, ref.hs(h)], x @ lw.W_Q[h])
        for kv in range(n_kv):
            assert close(yk[:, ref.hs(kv)], x @ lw.W_K[kv])
            assert close(yv[:, ref.hs(kv)], x @ lw.W_V[kv])
        z = torch.randn(5, n_heads, ref.dh, generator=g)
        expect_o = _no_bias(ref.mo, z.reshape(5, -1))
        assert close(expect_o, torch.einsum("bhd,hdn->bn", z, lw.W_O))
        fin = torch.cat([_no_bias(f, x) for f in ref.fin], dim=-1)
        assert close(fin, x @ lw.M_in)
        y = torch.randn(5, lw.M_out.shape[0], generator=g)
        assert close(_no_bias(ref.fout, y), y @ lw.M_out)
        if lw.gated:  # the whole SwiGLU block: down(act(x W_gate) * (x W_up)), gate first
            F = lw.M_out.shape[0]
            xin = x @ lw.M_in
            expect = ref.mlp.act_fn(xin[:, :F]) * xin[:, F:] @ lw.M_out
            assert close(ref.mlp(x), expect)


EXPECT = {  # family: (model_type, H_kv, d_h, d_ff, activation, gated)
    "bert": ("bert", H, 8, FF, "gelu", False),
    "roberta": ("roberta", H, 8, FF, "gelu", False),
    "distilbert": ("distilbert", H, 8, FF, "gelu", False),
    "gpt2": ("gpt2", H, 8, 4 * N, "gelu_new", False),
    "gpt2_inner": ("gpt2", H, 8, FF, "gelu_new", False),
    "llama": ("llama", 2, 8, FF, "silu", True),
    "llama_mha": ("llama", H, 8, FF, "silu", True),
    "llama_headdim": ("llama", 2, 16, FF, "silu", True),
    "mistral": ("mistral", 2, 8, FF, "silu", True),
    "qwen2": ("qwen2", 2, 8, FF, "silu", True),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matrices_match_model(saved, family: str) -> None:
    model, folder = saved(family)
    w, layers = _layers(folder)
    mt, hkv, dh, dff, act, gated = EXPECT[family]
    info = w.info
    assert (info.model_type, info.n_layers, info.d_model, info.n_heads) == (mt, L, N, H)
    assert (info.n_kv_heads, info.d_head, info.d_ff, info.activation) == (hkv, dh, dff, act)
    assert len(layers) == L
    for i, lw in enumerate(layers):
        assert lw.index == i and lw.gated is gated
        assert lw.M_in.shape == (N, dff * (2 if gated else 1)) and lw.M_out.shape == (dff, N)
        check_layer(lw, Ref(family, model, i), H, hkv)


def test_llama_head_dim_not_n_over_h(saved) -> None:
    """``head_dim`` from the config with H·d_h = 64 ≠ N = 32: shapes follow head_dim."""
    _, folder = saved("llama_headdim")
    w, layers = _layers(folder)
    assert w.info.n_heads * w.info.d_head == 64 != w.info.d_model
    assert layers[0].W_Q.shape == (H, N, 16) and layers[0].W_O.shape == (H, 16, N)


@pytest.mark.parametrize(
    "family,prefix", [("bert", "bert."), ("distilbert", "distilbert."), ("gpt2", "transformer."), ("llama", "model.")]
)
def test_task_model_prefix(saved, family: str, prefix: str) -> None:
    model, folder = saved(family, task=True)
    w, layers = _layers(folder)
    for i, lw in enumerate(layers):
        assert all(n.startswith(prefix) for v in lw.names.values() for n in v.split(" | ")), lw.names
        check_layer(lw, Ref(family, model, i), H, w.info.n_kv_heads)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_module_passed_directly(family: str) -> None:
    model = build(family, task=True, seed=3)
    w, layers = _layers(model)
    assert w.info.n_layers == L
    for i, lw in enumerate(layers):
        check_layer(lw, Ref(family, model, i), H, w.info.n_kv_heads)


@pytest.mark.parametrize("how", ["transformers", "dict", "path"])
def test_state_dict_with_config(saved, how: str) -> None:
    model, folder = saved("llama")
    cfg = {"transformers": model.config, "dict": json.loads((folder / "config.json").read_text()),
           "path": folder / "config.json"}[how]
    w, layers = _layers(model.state_dict(), config=cfg)
    assert (w.info.n_heads, w.info.n_kv_heads) == (H, 2)
    for i, lw in enumerate(layers):
        check_layer(lw, Ref("llama", model, i), H, 2)


def test_state_dict_without_config_is_an_error() -> None:
    with pytest.raises(InputError, match="no model config"):
        open_weights(build("bert").state_dict())


def test_single_safetensors_file(saved) -> None:
    model, folder = saved("gpt2")
    w, layers = _layers(folder / "model.safetensors")  # config.json beside it
    for i, lw in enumerate(layers):
        check_layer(lw, Ref("gpt2", model, i), H, H)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_sharded_folder(tmp_path: Path, saved, family: str) -> None:
    model, folder = saved(family, task=True)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    _, sharded = _layers(tmp_path)
    _, single = _layers(folder)
    for a, b in zip(sharded, single, strict=True):
        for key in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out"):
            assert torch.equal(getattr(a, key), getattr(b, key))
        assert a.extras.keys() == b.extras.keys()


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_bf16_checkpoint_opens_and_upcasts(tmp_path: Path, family: str) -> None:
    model = build(family, seed=5).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    w, layers = _layers(tmp_path)
    model32 = model.to(torch.float32)  # exact: bf16 ⊂ fp32
    for i, lw in enumerate(layers):
        assert lw.W_Q.dtype == torch.bfloat16 and lw.M_in.dtype == torch.bfloat16
        up = lw.to("cpu", torch.float64)
        assert up.W_Q.dtype == torch.float64 and up.M_out.dtype == torch.float64
        ref = Ref(family, model32, i)
        for h in range(H):
            assert torch.equal(up.W_Q[h], ref.q(h).double())
            assert torch.equal(up.W_O[h], ref.o(h).double())
        assert torch.equal(up.M_in, ref.m_in.double())
        assert torch.isfinite(up.M_out).all()


# -- notes ----------------------------------------------------------------------------------------

def _codes(w: TransformerWeights) -> set[str]:
    return {n.code for n in w.info.notes}


@pytest.mark.parametrize(
    "family,expected",
    [
        ("bert", set()),
        ("roberta", set()),
        ("distilbert", set()),
        ("gpt2", {"pre_norm"}),
        ("llama", {"gated_mlp", "rotary", "grouped_query_attention", "pre_norm", "rms_norm"}),
        ("llama_mha", {"gated_mlp", "rotary", "pre_norm", "rms_norm"}),
        ("mistral", {"gated_mlp", "rotary", "grouped_query_attention", "pre_norm", "rms_norm"}),
        ("qwen2", {"gated_mlp", "rotary", "grouped_query_attention", "pre_norm", "rms_norm"}),
    ],
)
def test_notes(saved, family: str, expected: set[str]) -> None:
    w = open_weights(saved(family)[1])
    assert _codes(w) == expected
    for n in w.info.notes:
        assert n.message  # every code has a human-readable explanation
    assert w.info.to_dict()["notes"] == [n.to_dict() for n in w.info.notes]


# -- extras: biases and norm parameters outside the proxy ------------------------------------------

@pytest.mark.parametrize(
    "family,task,names",
    [
        ("bert", True, ["bert.encoder.layer.1.attention.self.query.bias",
                        "bert.encoder.layer.1.attention.output.LayerNorm.weight",
                        "bert.encoder.layer.1.output.dense.bias"]),
        ("distilbert", False, ["transformer.layer.1.attention.q_lin.bias",
                               "transformer.layer.1.ffn.lin1.bias",
                               "transformer.layer.1.sa_layer_norm.weight"]),
        ("gpt2", True, ["transformer.h.1.attn.c_attn.bias", "transformer.h.1.mlp.c_fc.bias",
                        "transformer.h.1.ln_1.weight"]),
        ("llama", True, ["model.layers.1.input_layernorm.weight",
                         "model.layers.1.post_attention_layernorm.weight"]),
        ("qwen2", False, ["layers.1.self_attn.q_proj.bias", "layers.1.self_attn.k_proj.bias",
                          "layers.1.self_attn.v_proj.bias", "layers.1.input_layernorm.weight"]),
    ],
)
def test_extras_hold_biases_and_norms(saved, family: str, task: bool, names: list[str]) -> None:
    model, folder = saved(family, task=task)
    state = model.state_dict()
    lw = open_weights(folder).layer(1)
    for n in names:
        assert n in lw.extras, sorted(lw.extras)
        assert torch.equal(lw.extras[n], state[n])
    assert all(t.ndim == 1 for t in lw.extras.values())
    assert not any(".0." in k for k in lw.extras)  # only this layer's tensors
    proxy = {n.split("[")[0] for v in lw.names.values() for n in v.split(" | ")}
    assert proxy and not proxy & lw.extras.keys()  # the proxy matrices are not extras


# -- custom mapping ---------------------------------------------------------------------------------

BERT_MAPPING = bert_mapping(L, N, H)

LLAMA_MAPPING = {
    "L": L, "N": N, "H": H, "H_kv": 2, "activation": "silu", "model_type": "my-llama",
    "Q": "layers.{i}.self_attn.q_proj.weight",
    "K": "layers.{i}.self_attn.k_proj.weight",
    "V": "layers.{i}.self_attn.v_proj.weight",
    "O": "layers.{i}.self_attn.o_proj.weight",
    "M_in": ["layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.up_proj.weight"],
    "M_out": "layers.{i}.mlp.down_proj.weight",
}


def _same(a: list[LayerWeights], b: list[LayerWeights]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.gated == y.gated
        for key in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out"):
            assert torch.equal(getattr(x, key), getattr(y, key)), key
        assert x.extras.keys() == y.extras.keys()


@pytest.mark.parametrize("task", [False, True])
@pytest.mark.parametrize("as_file", [False, True])
def test_custom_mapping_reproduces_bert(tmp_path: Path, saved, as_file: bool, task: bool) -> None:
    _, folder = saved("bert", task=task)
    mapping: object = BERT_MAPPING
    if as_file:
        mapping = tmp_path / "map.json"
        mapping.write_text(json.dumps(BERT_MAPPING))
    wc, custom = _layers(folder, mapping=mapping)
    _, adapter = _layers(folder)
    _same(custom, adapter)
    assert _codes(wc) == {"custom_mapping"}
    assert wc.info.model_type == "custom" and wc.info.d_ff == FF and wc.info.activation == "gelu"
    if as_file:
        assert str(mapping) in wc.info.notes[0].message


def test_custom_mapping_gated_gqa_reproduces_llama(saved) -> None:
    _, folder = saved("llama", task=True)
    wc, custom = _layers(folder, mapping=LLAMA_MAPPING)
    _, adapter = _layers(folder)
    _same(custom, adapter)
    assert _codes(wc) == {"custom_mapping", "gated_mlp", "grouped_query_attention"}
    assert (wc.info.model_type, wc.info.n_kv_heads, wc.info.activation) == ("my-llama", 2, "silu")


def test_custom_mapping_conv1d_layout(tmp_path: Path, saved) -> None:
    """A BERT stored Conv1D-style ([in, out]) with layout 'conv1d' gives the BERT matrices."""
    from safetensors.torch import save_file

    _, folder = saved("bert")
    src = open_source(folder)
    state = {k: src.get(k) for k in src.keys()}
    conv = {k: (v.T.contiguous() if v.ndim == 2 and ".layer." in k else v) for k, v in state.items()}
    save_file(conv, str(tmp_path / "conv.safetensors"))
    _, custom = _layers(tmp_path / "conv.safetensors", mapping={**BERT_MAPPING, "layout": "conv1d"})
    _, adapter = _layers(folder)
    _same(custom, adapter)


def test_custom_mapping_without_config(tmp_path: Path, saved) -> None:
    """A bare safetensors file (no config.json) opens with a mapping alone."""
    import shutil

    _, folder = saved("bert")
    shutil.copy(folder / "model.safetensors", tmp_path / "w.safetensors")
    with pytest.raises(InputError, match="config.json"):
        open_weights(tmp_path / "w.safetensors")
    _, custom = _layers(tmp_path / "w.safetensors", mapping=BERT_MAPPING)
    _same(custom, _layers(folder)[1])


def _without(key: str) -> dict:
    return {k: v for k, v in BERT_MAPPING.items() if k != key}


@pytest.mark.parametrize(
    "mapping,match",
    [
        (_without("Q"), r"missing required field\(s\) 'Q'"),
        (_without("M_out"), r"'M_out'"),
        (_without("L"), r"missing required field\(s\) 'L'"),
        ({**BERT_MAPPING, "H": "4"}, r"field 'H' must be a positive integer"),
        ({**BERT_MAPPING, "N": 0}, r"field 'N' must be a positive integer"),
        ({**BERT_MAPPING, "L": True}, r"field 'L' must be a positive integer"),
        ({**BERT_MAPPING, "K": "encoder.layer.0.attention.self.key.weight"}, r"field 'K' .* no '\{i\}'"),
        ({**BERT_MAPPING, "V": "encoder.layer.{i}.{j}.value.weight"}, r"field 'V' .*not a valid template"),
        ({**BERT_MAPPING, "O": 7}, r"field 'O' must be a tensor-name template"),
        ({**BERT_MAPPING, "M_in": ["a.{i}", "b.{i}", "c.{i}"]}, r"field 'M_in' must be"),
        ({**BERT_MAPPING, "M_in": ["a.{i}", 3]}, r"field 'M_in\[1\]'"),
        ({**BERT_MAPPING, "layout": "conv"}, r"field 'layout' must be one of linear, conv1d"),
        ({**BERT_MAPPING, "Qq": "x"}, r"unknown field\(s\) 'Qq'"),
        ({**BERT_MAPPING, "H": 5}, r"H = 5 does not divide N = 32"),
        ({**BERT_MAPPING, "H_kv": 3}, r"not a multiple of H_kv = 3"),
        ({**BERT_MAPPING, "Q": "encoder.layer.{i}.attention.self.qeury.weight"},
         r"template Q .*qeury.* not a tensor .*Similar names: encoder.layer.0.attention.self.query.weight"),
        ({**BERT_MAPPING, "M_out": "encoder.layer.{i}.nope.weight"}, r"template M_out gives 'encoder.layer.0.nope.weight'"),
    ],
)
def test_custom_mapping_errors(tmp_path: Path, saved, mapping: dict, match: str) -> None:
    _, folder = saved("bert")
    with pytest.raises(InputError, match=match):
        open_weights(folder, mapping=mapping)
    # the same mapping from a file names the file
    f = tmp_path / "bad-map.json"
    f.write_text(json.dumps(mapping))
    with pytest.raises(InputError, match=match) as e:
        open_weights(folder, mapping=f)
    assert str(f) in str(e.value)


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"N": 48}, r"query.weight' has shape \(32, 32\), but the name mapping implies \(48, 48\)"),  # d_h = 12
        ({"layout": "conv1d", "H": 2}, r"but the name mapping implies"),  # ok for Q, wrong M_in
        ({"L": 3}, r"tensor 'encoder.layer.2.attention.self.query.weight' is missing"),
    ],
)
def test_custom_mapping_contradicting_checkpoint(saved, patch: dict, match: str) -> None:
    _, folder = saved("bert")
    with pytest.raises(InputError, match=match):  # L = 3 on a 2-layer file: at open, not at layer 2
        list(open_weights(folder, mapping={**BERT_MAPPING, **patch}).layers())


@pytest.mark.parametrize(
    "content,match",
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), (None, "no such file")],
)
def test_custom_mapping_bad_file(tmp_path: Path, saved, content: str | None, match: str) -> None:
    _, folder = saved("bert")
    f = tmp_path / "m.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(InputError, match=match) as e:
        open_weights(folder, mapping=f)
    assert str(f) in str(e.value)
    with pytest.raises(InputError, match="mapping must be a dict"):
        MappingAdapter.from_mapping(open_source(folder), 42)


# -- registry ----------------------------------------------------------------------------------------

def test_registry_lists_every_family() -> None:
    assert set(supported_model_types()) >= {
        "bert", "roberta", "electra", "distilbert", "gpt2", "llama", "mistral", "qwen2"
    }
    assert all(mt in a.model_types for mt, a in registry().items())


def test_layer_index_out_of_range(saved) -> None:
    w = open_weights(saved("gpt2")[1])
    with pytest.raises(IndexError):
        w.layer(L)


# -- property tests: head splitting for arbitrary shapes (no transformers model needed) -------------


@st.composite
def _llama_shapes(draw) -> tuple[int, int, int, int, int]:
    """(N, H, H_kv, d_h, d_ff) with H_kv | H and d_h free (H·d_h ≠ N allowed)."""
    h_kv = draw(st.integers(1, 3))
    H_ = h_kv * draw(st.integers(1, 3))
    return draw(st.integers(2, 12)), H_, h_kv, draw(st.integers(1, 5)), draw(st.integers(1, 9))


@settings(max_examples=30, deadline=None)
@given(shapes=_llama_shapes(), seed=st.integers(0, 2**16))
def test_llama_state_dict_any_shapes(shapes: tuple[int, int, int, int, int], seed: int) -> None:
    """QK/OV per head with GQA mapping h // (H/H_kv) for random shapes, from a raw state_dict."""
    N_, H_, Hkv, dh, F = shapes
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(2):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = torch.randn(H_ * dh, N_, generator=g)
        sd[p + "self_attn.k_proj.weight"] = torch.randn(Hkv * dh, N_, generator=g)
        sd[p + "self_attn.v_proj.weight"] = torch.randn(Hkv * dh, N_, generator=g)
        sd[p + "self_attn.o_proj.weight"] = torch.randn(N_, H_ * dh, generator=g)
        sd[p + "mlp.gate_proj.weight"] = torch.randn(F, N_, generator=g)
        sd[p + "mlp.up_proj.weight"] = torch.randn(F, N_, generator=g)
        sd[p + "mlp.down_proj.weight"] = torch.randn(N_, F, generator=g)
    cfg = {"model_type": "llama", "hidden_size": N_, "num_attention_heads": H_,
           "num_key_value_heads": Hkv, "head_dim": dh, "num_hidden_layers": 2, "intermediate_size": F}
    w = open_weights(sd, config=cfg)
    assert ("grouped_query_attention" in _codes(w)) == (Hkv < H_)
    for i, lw in enumerate(w.layers()):
        p = f"model.layers.{i}."
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        v, o = sd[p + "self_attn.v_proj.weight"], sd[p + "self_attn.o_proj.weight"]
        for h in range(H_):
            kv = h // (H_ // Hkv)
            hs, gs = slice(h * dh, (h + 1) * dh), slice(kv * dh, (kv + 1) * dh)
            assert close(lw.W_Q[h] @ lw.W_K[kv].T, q[hs].T @ k[gs])
            assert close(lw.W_V[kv] @ lw.W_O[h], v[gs].T @ o.T[hs])
        gate, up = sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]
        assert torch.equal(lw.M_in, torch.cat([gate.T, up.T], dim=1))
        assert torch.equal(lw.M_out, sd[p + "mlp.down_proj.weight"].T)
