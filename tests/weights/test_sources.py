"""Bad input at the source level: every case raises :class:`InputError` naming the file/tensor.

Each test copies a tiny saved checkpoint (``saved`` fixture) to ``tmp_path`` and damages it:
missing paths, non-safetensors bytes, truncation, missing tensors, configs contradicting the
shapes, bad head counts, NaN/Inf, unknown ``model_type``; and one valid oddity (a zero matrix).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from specbound.errors import InputError, UnsupportedArchitectureError
from specbound.weights.adapters import open_weights

WEIGHTS = "model.safetensors"


def _copy(saved, family: str, dest: Path, task: bool = False) -> Path:
    _, folder = saved(family, task=task)
    shutil.copytree(folder, dest)
    return dest


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (folder / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(folder: Path, fn) -> None:
    """Rewrite ``model.safetensors`` with ``fn(state)`` applied (in place)."""
    state = load_file(str(folder / WEIGHTS))
    fn(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS))


def _all_layers(folder: Path, **kw) -> None:
    w = open_weights(folder, **kw)
    for _ in w.layers():
        pass


# -- paths and files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["no-such-folder", "no-such-file.safetensors"])
def test_missing_path(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    with pytest.raises(InputError, match="no such file or folder") as e:
        open_weights(p)
    assert str(p) in str(e.value)


def test_not_an_analysable_object() -> None:
    with pytest.raises(InputError, match="cannot analyse an object of type int"):
        open_weights(42)


@pytest.mark.parametrize("n_bytes", [4, 4096])
def test_random_bytes_are_not_safetensors(tmp_path: Path, saved, n_bytes: int) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    f = folder / WEIGHTS
    f.write_bytes(random.Random(0).randbytes(n_bytes))
    with pytest.raises(InputError, match="not a (valid )?safetensors file") as e:
        open_weights(folder)
    assert str(f) in str(e.value)
    with pytest.raises(InputError, match="not a (valid )?safetensors file"):
        open_weights(f)  # the file itself, config.json beside it


@pytest.mark.parametrize("keep", [0.5, 0.99, 20])
def test_truncated_safetensors(tmp_path: Path, saved, keep: float) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    f = folder / WEIGHTS
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])  # 20 B: cut in the header
    with pytest.raises(InputError, match="truncated|corrupt|not a (valid )?safetensors") as e:
        open_weights(folder)
    assert str(f) in str(e.value)


def test_folder_without_weights(tmp_path: Path, saved) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    (folder / WEIGHTS).unlink()
    with pytest.raises(InputError, match=r"no \*\.safetensors file") as e:
        open_weights(folder)
    assert str(folder) in str(e.value)


def test_shard_listed_in_index_is_missing(tmp_path: Path, saved) -> None:
    model, _ = saved("bert")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(InputError, match="lists shard") as e:
        open_weights(tmp_path)
    assert shard.name in str(e.value)


# -- configs --------------------------------------------------------------------------------------

def test_folder_without_config(tmp_path: Path, saved) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(InputError, match="no config.json") as e:
        open_weights(folder)
    assert str(folder) in str(e.value)


def test_config_not_json(tmp_path: Path, saved) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    (folder / "config.json").write_text("{hidden_size: 32")
    with pytest.raises(InputError, match="not valid JSON") as e:
        open_weights(folder)
    assert str(folder / "config.json") in str(e.value)


@pytest.mark.parametrize(
    "family,changes,match",
    [
        ("bert", {"hidden_size": None}, r"none of the fields hidden_size"),
        ("bert", {"hidden_size": "32"}, r"config field 'hidden_size' must be an integer"),
        ("distilbert", {"n_layers": None}, r"none of the fields n_layers, num_hidden_layers"),
        ("gpt2", {"n_head": 2.0}, r"config field 'n_head' must be an integer"),
        ("llama", {"intermediate_size": 0}, r"d_ff must be a positive integer"),
    ],
)
def test_config_missing_or_bad_field(tmp_path: Path, saved, family: str, changes: dict, match: str) -> None:
    folder = _copy(saved, family, tmp_path / "m")
    _edit_config(folder, **changes)
    with pytest.raises(InputError, match=match) as e:
        open_weights(folder)
    assert str(folder) in str(e.value)


def test_unknown_model_type_lists_supported(tmp_path: Path, saved) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    _edit_config(folder, model_type="t5")
    with pytest.raises(UnsupportedArchitectureError) as e:
        open_weights(folder)
    msg = str(e.value)
    assert "'t5' is not supported" in msg and "--mapping" in msg
    for mt in ("bert", "roberta", "distilbert", "gpt2", "llama", "mistral", "qwen2"):
        assert mt in msg


def test_missing_model_type(tmp_path: Path, saved) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    _edit_config(folder, model_type=None)
    with pytest.raises(InputError, match="has no 'model_type'"):
        open_weights(folder)


def test_model_type_contradicting_the_tensors(tmp_path: Path, saved) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    _edit_config(folder, model_type="gpt2")
    with pytest.raises(InputError, match=r"no tensor named like 'h\.0\.attn\.c_attn\.weight'.*gpt2"):
        open_weights(folder)


# -- tensors --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "family,task,key",
    [
        ("bert", False, "encoder.layer.1.attention.self.key.weight"),
        ("gpt2", True, "transformer.h.1.mlp.c_proj.weight"),
        ("llama", True, "model.layers.1.mlp.up_proj.weight"),
        ("distilbert", False, "transformer.layer.1.attention.out_lin.weight"),
    ],
)
def test_tensor_missing_for_a_layer(tmp_path: Path, saved, family: str, task: bool, key: str) -> None:
    folder = _copy(saved, family, tmp_path / "m", task=task)
    _edit_tensors(folder, lambda s: s.pop(key))
    w = open_weights(folder)
    w.layer(0)  # lazy: the intact layer still reads
    with pytest.raises(InputError, match="is missing") as e:
        w.layer(1)
    assert repr(key) in str(e.value)


def test_more_layers_in_config_than_in_file(tmp_path: Path, saved) -> None:
    folder = _copy(saved, "llama", tmp_path / "m")
    _edit_config(folder, num_hidden_layers=3)
    with pytest.raises(InputError, match=r"'layers\.2\.self_attn\.q_proj\.weight' is missing"):
        _all_layers(folder)


@pytest.mark.parametrize(
    "family,changes,tensor",
    [
        ("bert", {"hidden_size": 48}, "encoder.layer.0.attention.self.query.weight"),
        ("bert", {"intermediate_size": 40}, "encoder.layer.0.intermediate.dense.weight"),
        ("distilbert", {"dim": 64}, "transformer.layer.0.attention.q_lin.weight"),
        ("gpt2", {"n_embd": 48}, "h.0.attn.c_attn.weight"),
        ("gpt2", {"n_inner": 64}, "h.0.mlp.c_fc.weight"),
        ("llama", {"num_key_value_heads": 4}, "layers.0.self_attn.k_proj.weight"),
        ("llama", {"head_dim": 16}, "layers.0.self_attn.q_proj.weight"),
        ("qwen2", {"intermediate_size": 40}, "layers.0.mlp.gate_proj.weight"),
    ],
)
def test_shapes_contradicting_config(tmp_path: Path, saved, family: str, changes: dict, tensor: str) -> None:
    folder = _copy(saved, family, tmp_path / "m")
    _edit_config(folder, **changes)
    with pytest.raises(InputError, match="config") as e:
        _all_layers(folder)
    assert repr(tensor) in str(e.value) and "has shape" in str(e.value)


@pytest.mark.parametrize(
    "family,changes,match",
    [
        ("bert", {"num_attention_heads": 5}, r"head count 5 does not divide the hidden size 32"),
        ("distilbert", {"n_heads": 3}, r"head count 3 does not divide the hidden size 32"),
        ("gpt2", {"n_head": 6}, r"head count 6 does not divide the hidden size 32"),
        ("llama", {"num_attention_heads": 5, "head_dim": None}, r"head count 5 does not divide"),
        ("llama", {"num_key_value_heads": 3}, r"query heads \(4\) is not a multiple of .* \(3\)"),
    ],
)
def test_bad_head_counts(tmp_path: Path, saved, family: str, changes: dict, match: str) -> None:
    folder = _copy(saved, family, tmp_path / "m")
    _edit_config(folder, **changes)
    with pytest.raises(InputError, match=match) as e:
        open_weights(folder)
    assert str(folder) in str(e.value)


@pytest.mark.parametrize(
    "family,key,value,named",
    [
        ("bert", "encoder.layer.1.output.dense.weight", float("nan"), "encoder.layer.1.output.dense.weight"),
        ("bert", "encoder.layer.1.attention.self.query.weight", float("inf"),
         "encoder.layer.1.attention.self.query.weight"),
        ("llama", "layers.1.mlp.up_proj.weight", float("-inf"), "layers.1.mlp.up_proj.weight"),
        ("gpt2", "h.1.attn.c_attn.weight", float("nan"), "h.1.attn.c_attn.weight[:, N:2N]"),
    ],
)
def test_nan_or_inf_names_the_tensor(tmp_path: Path, saved, family: str, key: str, value: float, named: str) -> None:
    folder = _copy(saved, family, tmp_path / "m")

    def poison(s: dict[str, torch.Tensor]) -> None:
        t = s[key]
        if family == "gpt2":  # a column of the K block of the fused [Q | K | V]
            t[3, t.shape[1] // 3 + 1] = value
        else:
            t[2, 1] = value

    _edit_tensors(folder, poison)
    w = open_weights(folder)
    w.layer(0)
    with pytest.raises(InputError, match="NaN or Inf") as e:
        w.layer(1)
    assert named in str(e.value)


def test_zero_matrix_is_valid(tmp_path: Path, saved) -> None:
    folder = _copy(saved, "bert", tmp_path / "m")
    key = "encoder.layer.0.attention.self.value.weight"
    _edit_tensors(folder, lambda s: s.__setitem__(key, torch.zeros_like(s[key])))
    w = open_weights(folder)
    lw = w.layer(0)
    assert torch.count_nonzero(lw.W_V) == 0
    assert torch.count_nonzero(lw.W_Q) > 0
    list(w.layers())


def test_bf16_nan_is_caught(tmp_path: Path, saved) -> None:
    model, _ = saved("llama")
    sd = {k: v.to(torch.bfloat16).clone() for k, v in model.state_dict().items()}
    sd["layers.0.self_attn.o_proj.weight"][0, 0] = float("nan")
    save_file(sd, str(tmp_path / WEIGHTS))
    shutil.copy(saved("llama")[1] / "config.json", tmp_path / "config.json")
    with pytest.raises(InputError, match=r"layers\.0\.self_attn\.o_proj\.weight contains NaN"):
        open_weights(tmp_path).layer(0)
