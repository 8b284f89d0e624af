"""Bad input on the reading side (issue 17): every path is a regular file before it is opened,
every size is checked against the file before anything is allocated, PyTorch files are read with
``weights_only=True`` only, index entries stay inside the folder, configs are checked, and each
case is ONE line naming the file / tensor / option. Valid oddities keep working (symlinked
Hugging Face cache snapshots, legacy ``torch.save`` files, unpadded headers).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from builders import bert_config, bert_mapping, write_bert
from builders import no_hang as _no_hang
from safetensors.torch import load_file, save_file

from specbound.analysis import analyze
from specbound.errors import InputError
from specbound.weights.adapters import open_weights

WEIGHTS = "model.safetensors"
BERT_MAPPING = bert_mapping()


def no_hang(seconds: float = 20):
    return _no_hang(seconds, "opening the input")


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture()
def bert(tmp_path: Path) -> Path:
    return write_bert(tmp_path / "m", L=2, N=16, H=4, F=24)


def _layer0(w) -> torch.Tensor:
    return w.layer(0).W_Q


# -- 1. regular files only -------------------------------------------------------------------

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@needs_fifo
@pytest.mark.parametrize("which", ["weights", "config", "index", "file-source", "config-option",
                                   "mapping-option", "init", "bin"])
def test_fifo_anywhere_is_one_line_error_not_a_hang(bert: Path, tmp_path: Path, which: str) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    kw: dict = {}
    source: object = bert
    if which == "weights":
        (bert / WEIGHTS).unlink()
        os.mkfifo(bert / WEIGHTS)
    elif which == "config":
        (bert / "config.json").unlink()
        os.mkfifo(bert / "config.json")
    elif which == "index":
        os.mkfifo(bert / "model.safetensors.index.json")
    elif which == "file-source":
        source = tmp_path / "pipe"
        (tmp_path / "config.json").write_text(json.dumps(bert_config(L=2, N=16, H=4, F=24)))
    elif which == "config-option":
        kw["config"] = fifo
    elif which == "mapping-option":
        kw["mapping"] = fifo
    elif which == "bin":
        (bert / WEIGHTS).unlink()
        os.mkfifo(bert / "pytorch_model.bin")
    with no_hang(), pytest.raises(InputError) as e:
        if which == "init":
            analyze(bert, init=fifo, bounds="spectrum_adaptive")
        else:
            list(open_weights(source, **kw).layers())
    msg = one_line(e)
    assert "FIFO" in msg and "not a regular file" in msg


@needs_fifo
def test_fifo_as_text_or_token_file(tmp_path: Path) -> None:
    from specbound.data.texts import read_text_file, read_token_ids

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for fn in (read_text_file, read_token_ids):
        with no_hang(), pytest.raises(InputError, match="FIFO") as e:
            fn(fifo)
        one_line(e)


@needs_fifo
@pytest.mark.parametrize("kw", ["texts", "token_ids"])
def test_fifo_as_analyze_text_fails_before_the_work(bert: Path, tmp_path: Path, monkeypatch, kw: str) -> None:
    import specbound.analysis as an

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    monkeypatch.setattr(an, "compute_spectra", lambda *a, **k: pytest.fail("spectra computed first"))
    with no_hang(), pytest.raises(InputError, match="FIFO") as e:
        analyze(bert, **{kw: fifo})
    one_line(e)


@needs_fifo
def test_fifo_as_experiment_grid_file(tmp_path: Path) -> None:
    from specbound.experiments.correlation.config import load_grid
    from specbound.experiments.scaling.grid import read_grid

    for name, fn in (("grid.csv", read_grid), ("grid.json", load_grid)):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        with no_hang(), pytest.raises(InputError, match="FIFO") as e:
            fn(fifo)
        one_line(e)


def test_config_that_is_a_folder(bert: Path, tmp_path: Path) -> None:
    (tmp_path / "cfgdir").mkdir()
    with pytest.raises(InputError, match="a folder, not a regular file") as e:
        open_weights(bert, config=tmp_path / "cfgdir")
    assert str(tmp_path / "cfgdir") in one_line(e)


def test_symlink_to_a_file_is_fine(bert: Path, tmp_path: Path) -> None:
    link = tmp_path / "cfg-link.json"
    link.symlink_to(bert / "config.json")
    assert open_weights(bert, config=link).info.n_layers == 2


@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_source_is_an_error_not_the_current_folder(bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                         empty: str) -> None:
    monkeypatch.chdir(bert)  # the current folder IS a valid checkpoint: "" must still be refused
    with pytest.raises(InputError, match="empty path") as e:
        open_weights(empty)
    one_line(e)


def test_cli_empty_source_exit_1(bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from specbound.cli import app

    monkeypatch.chdir(bert)
    res = CliRunner().invoke(app, ["analyze", "", "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    assert "empty path" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_oversized_config_refused_before_reading(bert: Path) -> None:
    with (bert / "config.json").open("r+b") as fh:  # sparse: 65 MiB of nothing, not written
        fh.truncate(65 * 2**20)
    with pytest.raises(InputError, match="larger than any model config") as e:
        open_weights(bert)
    one_line(e)


# -- 2. sizes checked against the file ----------------------------------------------------------

def _rewrite_header(path: Path, fn) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    h = json.loads(data[8 : 8 + n])
    fn(h)
    raw = json.dumps(h).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


def _retile(h: dict) -> None:
    """Recompute contiguous data_offsets from the shapes (a self-consistent header)."""
    pos = 0
    for k in sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0]):
        nb = math.prod(h[k]["shape"]) * 4
        h[k]["data_offsets"] = [pos, pos + nb]
        pos += nb


@pytest.mark.parametrize("retile", [False, True])
def test_huge_shape_in_small_file_fails_at_once(bert: Path, retile: bool) -> None:
    q = "encoder.layer.0.attention.self.query.weight"

    def f(h):
        h[q]["shape"] = [20000, 20000]
        if retile:
            _retile(h)  # offsets consistent with the shapes: the file is then 1.6 GB short
    _rewrite_header(bert / WEIGHTS, f)
    with no_hang(), pytest.raises(InputError) as e:
        open_weights(bert)
    msg = one_line(e)
    assert str(bert / WEIGHTS) in msg
    if retile:
        assert "truncated safetensors file" in msg and "promises 16" in msg
    else:
        assert repr(q) in msg and "[20000, 20000]" in msg and "1600000000 bytes" in msg


def test_length_field_beyond_the_file(bert: Path) -> None:
    data = (bert / WEIGHTS).read_bytes()
    (bert / WEIGHTS).write_bytes((2**62).to_bytes(8, "little") + data[8:])
    with pytest.raises(InputError, match=r"length field promises a 4611686018427387904-byte header") as e:
        open_weights(bert)
    one_line(e)


@pytest.mark.parametrize("template,shown", [
    ("encoder.layer.{i:>300000000}.attention.self.query.weight", "{i:>300000000}"),
    ("encoder.layer.{i[0]}.attention.self.query.weight", "{i[0]}"),
    ("encoder.layer.{i.real}.attention.self.query.weight", "{i.real}"),
    ("encoder.layer.{i!r}.attention.self.query.weight", "{i!r}"),
    ("encoder.layer.{0}.attention.self.query.weight", "{0}"),
])
def test_mapping_template_with_format_spec_is_refused(bert: Path, tmp_path: Path, template: str,
                                                      shown: str) -> None:
    mapping = {**BERT_MAPPING, "L": 2, "N": 16, "H": 4, "Q": template}
    f = tmp_path / "map.json"
    f.write_text(json.dumps(mapping))
    with pytest.raises(InputError) as e:
        open_weights(bert, mapping=f)
    msg = one_line(e)
    assert str(f) in msg and "'Q'" in msg and repr(shown) in msg and len(msg) < 400


def test_mapping_with_literal_braces_still_works(tmp_path: Path) -> None:
    """Doubled braces are literal text, not fields: a tensor named with braces is reachable."""
    folder = write_bert(tmp_path / "m", L=1, N=16, H=4, F=24)
    state = load_file(str(folder / WEIGHTS))
    q = "encoder.layer.0.attention.self.query.weight"
    state["x{0}." + q] = state.pop(q)
    save_file(state, str(folder / WEIGHTS))
    m = {**BERT_MAPPING, "L": 1, "N": 16, "H": 4, "Q": "x{{0}}.encoder.layer.{i}.attention.self.query.weight"}
    w = open_weights(folder, mapping=m)
    assert w.layer(0).names["W_Q"] == "x{0}." + q


# -- 3. PyTorch files: weights_only=True, one-line refusals -----------------------------------------

@pytest.mark.parametrize("name,legacy", [("model.pt", False), ("pytorch_model.bin", False), ("old.pt", True)])
def test_single_torch_file_is_read(bert: Path, tmp_path: Path, name: str, legacy: bool) -> None:
    state = load_file(str(bert / WEIGHTS))
    d = tmp_path / "torchfile"
    d.mkdir()
    shutil.copy(bert / "config.json", d / "config.json")
    torch.save(state, d / name, _use_new_zipfile_serialization=not legacy)
    w = open_weights(d / name)
    ref = open_weights(bert)
    assert torch.equal(_layer0(w), _layer0(ref))
    assert w.info.source == str(d / name)


def test_folder_bin_and_file_bin_agree(bert: Path, tmp_path: Path) -> None:
    d = tmp_path / "binfolder"
    d.mkdir()
    shutil.copy(bert / "config.json", d / "config.json")
    torch.save(load_file(str(bert / WEIGHTS)), d / "pytorch_model.bin")
    assert torch.equal(_layer0(open_weights(d)), _layer0(open_weights(d / "pytorch_model.bin")))


class _Payload:
    """Unpickling this would create the file named by ``path``: it must never happen."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("in_folder", [False, True])
def test_malicious_pickle_refused_in_one_line_without_bad_advice(bert: Path, tmp_path: Path, in_folder: bool) -> None:
    marker = tmp_path / "pwned"
    d = tmp_path / "evil"
    d.mkdir()
    shutil.copy(bert / "config.json", d / "config.json")
    f = d / ("pytorch_model.bin" if in_folder else "model.pt")
    torch.save({"w": torch.zeros(2), "x": _Payload(str(marker))}, f)
    with pytest.raises(InputError) as e:
        open_weights(d if in_folder else f)
    msg = one_line(e)
    assert not marker.exists()  # no code ran
    assert str(f) in msg and "refused to load" in msg
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg
    assert "unsupported global getattr" in msg  # torch's reason (the refused global) is kept
    assert "add_safe_globals" not in msg and "\x1b" not in msg


@pytest.mark.parametrize("content,match", [
    ([torch.zeros(2)], r"holds a list, not a state_dict"),
    (torch.zeros(3), r"holds a Tensor, not a state_dict"),
    ({"a": torch.zeros(2), "epoch": 3}, r"entry 'epoch' is a int, not a tensor"),
    ({"model": {"a": torch.zeros(2)}}, r"entry 'model' is a dict, not a tensor"),
    ({}, r"the state_dict is empty"),
])
def test_bin_not_a_dict_of_tensors(bert: Path, tmp_path: Path, content, match: str) -> None:
    d = tmp_path / "odd"
    d.mkdir()
    shutil.copy(bert / "config.json", d / "config.json")
    torch.save(content, d / "pytorch_model.bin")
    with pytest.raises(InputError, match=match) as e:
        open_weights(d / "pytorch_model.bin")
    assert str(d / "pytorch_model.bin") in one_line(e)


def test_corrupt_pt_names_the_format(bert: Path, tmp_path: Path) -> None:
    shutil.copy(bert / "config.json", tmp_path / "config.json")
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(InputError, match="not a readable PyTorch state_dict") as e:
        open_weights(tmp_path / "model.pt")
    one_line(e)


# -- 4. the index: weight_map inside the folder, symlinked snapshots work ---------------------------

def _sharded(tmp_path: Path) -> Path:
    """A two-shard BERT folder with ``model.safetensors.index.json`` (layer 0 | the rest)."""
    d = write_bert(tmp_path / "sharded", L=2, N=16, H=4, F=24)
    state = load_file(str(d / WEIGHTS))
    (d / WEIGHTS).unlink()
    shards = {"model-00001-of-00002.safetensors": {k: v for k, v in state.items() if ".layer.0." in k}}
    shards["model-00002-of-00002.safetensors"] = {k: v for k, v in state.items() if ".layer.0." not in k}
    weight_map = {}
    for name, part in shards.items():
        save_file(part, str(d / name))
        weight_map.update(dict.fromkeys(part, name))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d


def _edit_index(d: Path, fn) -> Path:
    idx = d / "model.safetensors.index.json"
    data = json.loads(idx.read_text())
    fn(data)
    idx.write_text(json.dumps(data))
    return idx


@pytest.mark.parametrize("bad,match", [
    ("/etc/passwd", "outside the checkpoint folder"),
    ("ABSOLUTE-OTHER", "outside the checkpoint folder"),
    ("../other/model.safetensors", "outside the checkpoint folder"),
    ("sub/../../x.safetensors", "outside the checkpoint folder"),
    ("C:\\models\\x.safetensors", "outside the checkpoint folder"),
    (3, "not tensor name -> shard file name"),
    (None, "not tensor name -> shard file name"),
])
def test_weight_map_entry_outside_the_folder(tmp_path: Path, bad, match: str) -> None:
    d = _sharded(tmp_path)
    other = write_bert(tmp_path / "other", L=2, N=16, H=4, F=24, seed=5)  # a real file an entry could reach
    assert (other / WEIGHTS).is_file()
    if bad == "ABSOLUTE-OTHER":
        bad = str(other / WEIGHTS)
    key = "encoder.layer.0.attention.self.query.weight"
    idx = _edit_index(d, lambda data: data["weight_map"].__setitem__(key, bad))
    with pytest.raises(InputError, match=match) as e:
        open_weights(d)
    msg = one_line(e)
    assert str(idx) in msg and repr(key) in msg


@pytest.mark.parametrize("wm", [["a.safetensors"], "model.safetensors", {}, None])
def test_weight_map_not_a_dict(tmp_path: Path, wm) -> None:
    d = _sharded(tmp_path)
    idx = _edit_index(d, lambda data: data.__setitem__("weight_map", wm))
    with pytest.raises(InputError, match="not a valid safetensors index") as e:
        open_weights(d)
    assert str(idx) in one_line(e)


def test_hugging_face_cache_layout_with_symlinks(tmp_path: Path) -> None:
    """A snapshot folder whose files are symlinks to ``../../blobs/<hash>`` (the HF cache)."""
    src = _sharded(tmp_path)
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / ("a" * 40)
    blobs = repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in sorted(src.iterdir()):
        blob = blobs / f"{abs(hash(f.name)):x}{len(f.name)}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(Path("../../blobs") / blob.name)
    assert all((snap / f.name).is_symlink() for f in src.iterdir())
    w = open_weights(snap)
    assert torch.equal(_layer0(w), _layer0(open_weights(src)))
    assert [lw.index for lw in w.layers()] == [0, 1]


# -- 5. configs -------------------------------------------------------------------------------

def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("mt", [["bert"], {"name": "bert"}, 3])
def test_model_type_not_a_string(bert: Path, mt) -> None:
    _edit_config(bert, model_type=mt)
    with pytest.raises(InputError, match="'model_type' must be a string") as e:
        open_weights(bert)
    assert str(bert) in one_line(e)


@pytest.mark.parametrize("heads,match", [
    (0, r"head count 0 must be a positive integer"),
    (-4, r"head count -4 must be a positive integer"),
    (5, r"head count 5 does not divide the hidden size 16"),
])
def test_bad_attention_head_count(bert: Path, heads: int, match: str) -> None:
    _edit_config(bert, num_attention_heads=heads)
    with pytest.raises(InputError, match=match) as e:
        open_weights(bert)
    one_line(e)


def test_fewer_layers_in_config_than_in_file_is_an_error(bert: Path) -> None:
    _edit_config(bert, num_hidden_layers=1)
    with pytest.raises(InputError, match=r"belongs to layer 1, but the config says 1 layer") as e:
        open_weights(bert)
    assert "encoder.layer.1." in one_line(e)


def test_fewer_layers_in_mapping_than_in_file_is_an_error(bert: Path) -> None:
    with pytest.raises(InputError, match=r"belongs to layer 1, but the name mapping says 1 layer"):
        open_weights(bert, mapping={**BERT_MAPPING, "L": 1, "N": 16, "H": 4})


@pytest.mark.parametrize("dtype,shown", [(torch.complex64, "C64"), (torch.complex128, "C128"),
                                         (torch.bool, "BOOL"), (torch.float8_e4m3fn, "F8_E4M3"),
                                         (torch.float8_e5m2, "F8_E5M2"), (torch.int32, "I32")])
def test_non_real_float_weights_are_refused(bert: Path, dtype: torch.dtype, shown: str) -> None:
    if dtype is torch.complex128:  # not a safetensors dtype: the in-memory route
        state = load_file(str(bert / WEIGHTS))
        key = "encoder.layer.0.attention.self.key.weight"
        state[key] = state[key].to(dtype)
        with pytest.raises(InputError, match=f"dtype {shown}") as e:
            list(open_weights(state, config=bert / "config.json").layers())
        assert repr(key) in one_line(e) and "imaginary part" in str(e.value)
        return
    state = load_file(str(bert / WEIGHTS))
    key = "encoder.layer.0.attention.self.key.weight"
    state[key] = state[key].to(dtype)
    save_file(state, str(bert / WEIGHTS))
    with pytest.raises(InputError, match=f"tensor '{key}' has dtype {shown}") as e:
        list(open_weights(bert).layers())
    msg = one_line(e)
    assert str(bert / WEIGHTS) in msg
    assert ("imaginary part" in msg) == dtype.is_complex


def test_bool_bias_refused_too(bert: Path) -> None:
    state = load_file(str(bert / WEIGHTS))
    key = "encoder.layer.1.attention.self.query.bias"
    state[key] = state[key] > 0
    save_file(state, str(bert / WEIGHTS))
    w = open_weights(bert)
    w.layer(0)
    with pytest.raises(InputError, match=f"tensor '{key}' has dtype BOOL") as e:
        w.layer(1)
    one_line(e)


def test_nan_in_a_bias_names_it(bert: Path) -> None:
    state = load_file(str(bert / WEIGHTS))
    key = "encoder.layer.0.attention.output.dense.bias"
    state[key][3] = math.inf
    save_file(state, str(bert / WEIGHTS))
    with pytest.raises(InputError, match=f"tensor {key} contains NaN or Inf") as e:
        open_weights(bert).layer(0)
    one_line(e)


def test_complex_canonical_weights_refused(bert: Path) -> None:
    """TransformerWeights built in memory (the API route) get the same check."""
    from builders import make_model, transform

    tw = transform(make_model(L=1), lambda lw: type(lw)(lw.index, lw.W_Q.to(torch.complex128), lw.W_K, lw.W_V,
                                                        lw.W_O, lw.M_in, lw.M_out))
    with pytest.raises(InputError, match=r"tensor W_Q has dtype complex128") as e:
        tw.layer(0)
    one_line(e)


# -- 6. --init of another model_type ------------------------------------------------------------------

def test_init_of_another_model_type_is_a_warning_in_the_report(bert: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    shutil.copytree(bert, ref)
    same = analyze(bert, init=ref, bounds="spectrum_adaptive")
    assert "warnings" not in same.options  # control: same model_type, no warning
    _edit_config(ref, model_type="roberta")  # same tensor names and sizes
    r = analyze(bert, init=ref, bounds="spectrum_adaptive")
    [w] = r.options["warnings"]
    assert "'roberta'" in w and "'bert'" in w and str(ref) in w
    from specbound.report.tables import run_notes

    assert w in run_notes(r)
    assert r.to_dict()["options"]["warnings"] == [w]
