"""The `specbound` command: the main job, options, and every bad input (one line, exit 1/2,
nothing written)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import bert_config, write_bert
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from specbound.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_analyze_tiny_model_writes_everything(tiny_bert, tmp_path):
    out = tmp_path / "rep"
    res = run("analyze", str(tiny_bert), "--out", str(out), "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "m.csv"))
    assert res.exit_code == 0, res.output
    assert "spectrum_adaptive" in res.stdout and "edelman" in res.stdout and str(out) in res.stdout
    for f in ("report.json", "matrices.csv", "bounds.csv", "not_analysed.csv", "singular_values.png", "term_curves.png", "p_star.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc) >= {"model", "bounds", "matrices", "options", "versions", "not_analysed"}
    assert set(doc["bounds"]) >= {"spectrum_adaptive", "edelman"}  # + the catalogue (tests/test_cli_bounds.py)
    for b in doc["bounds"].values():
        assert {"value", "log10_value", "notes"} <= set(b) and math.isfinite(b["log10_value"])
    assert doc["model"]["L"] == 2 and doc["model"]["N"] == 16 and doc["model"]["H"] == 4
    assert len(doc["matrices"]) == 2 * (4 + 4 + 2)
    assert {"p_star", "term", "term_p0", "gamma", "alpha", "norm_21", "effective_rank"} <= set(doc["matrices"][0])
    assert (tmp_path / "m.csv").read_text().startswith("layer,head,kind,rows,cols,rank")
    assert "warm_start" not in doc["options"]  # the warm start is gone (issue 20)
    # no stray staging files
    assert not [p for p in tmp_path.rglob(".specbound-*")]


def test_options_reach_the_analysis(tiny_bert, tmp_path):
    res = run("analyze", str(tiny_bert), "--out", str(tmp_path / "o"), "--no-plots", "--dense", "--dtype", "float32",
              "--l-phi", "1.0", "--grid-m", "7", "--bounds", "edelman", "--ff-method", "svd")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert doc["options"] == {"l_phi": 1.0, "l_phi_from": "option", "grid_m": 7, "dtype": "float32", "device": "cpu", "dense": True,
                              "ff_method": "svd", "bounds": ["edelman"], "seq_len": None, "init": None}
    assert set(doc["bounds"]) == {"edelman"}
    assert not (tmp_path / "o" / "p_star.png").exists()


def _assert_fails(res, code: int, *needles: str):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    text = res.output
    for n in needles:
        assert n in text, (n, text)


def _bad_folder(tmp_path: Path, mutate) -> Path:
    folder = write_bert(tmp_path / "bad")
    mutate(folder)
    return folder


def _edit_tensors(folder: Path, fn) -> None:
    sd = load_file(str(folder / "model.safetensors"))
    fn(sd)
    save_file(sd, str(folder / "model.safetensors"))


def _edit_config(folder: Path, **kw) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(kw)
    (folder / "config.json").write_text(json.dumps(cfg))


BAD_INPUTS = {
    "missing path": (lambda tmp: tmp / "nope" / "model", "no such file or folder"),
    "not safetensors": (
        lambda tmp: _bad_folder(tmp, lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 40 + b"junk" * 10)),
        "model.safetensors",
    ),
    "truncated": (
        lambda tmp: _bad_folder(tmp, lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-100])),
        "truncated",
    ),
    "missing tensor": (
        lambda tmp: _bad_folder(tmp, lambda f: _edit_tensors(f, lambda sd: sd.pop("encoder.layer.1.attention.self.key.weight"))),
        "encoder.layer.1.attention.self.key.weight",
    ),
    "shape contradicts config": (
        lambda tmp: _bad_folder(tmp, lambda f: _edit_config(f, hidden_size=20, num_attention_heads=4)),
        "config",
    ),
    "heads do not divide": (
        lambda tmp: _bad_folder(tmp, lambda f: _edit_config(f, num_attention_heads=5)),
        "does not divide",
    ),
    "nan weight": (
        lambda tmp: _bad_folder(tmp, lambda f: _edit_tensors(f, lambda sd: sd["encoder.layer.0.output.dense.weight"].__setitem__((0, 0), float("nan")))),
        "encoder.layer.0.output.dense.weight",
    ),
    "inf weight": (
        lambda tmp: _bad_folder(tmp, lambda f: _edit_tensors(f, lambda sd: sd["encoder.layer.1.attention.self.query.weight"].__setitem__((1, 1), float("inf")))),
        "encoder.layer.1.attention.self.query.weight",
    ),
    "unknown model_type": (
        lambda tmp: _bad_folder(tmp, lambda f: _edit_config(f, model_type="t5")),
        "'t5' is not supported",
    ),
    "no config": (
        lambda tmp: _bad_folder(tmp, lambda f: (f / "config.json").unlink()),
        "config",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_1_and_writes_nothing(case, tmp_path):
    make, needle = BAD_INPUTS[case]
    src = make(tmp_path)
    out = tmp_path / "report"
    res = run("analyze", str(src), "--out", str(out), "--json", str(tmp_path / "r.json"))
    _assert_fails(res, 1, "error:", needle)
    assert len(res.output.strip().splitlines()) <= 3  # one message (rich may wrap it)
    assert not out.exists() and not (tmp_path / "r.json").exists()


def test_unknown_model_type_lists_supported(tmp_path):
    src = _bad_folder(tmp_path, lambda f: _edit_config(f, model_type="t5"))
    res = run("analyze", str(src), "--out", str(tmp_path / "o"))
    for mt in ("bert", "gpt2", "llama"):
        assert mt in res.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--dtype", "float16"), "--dtype"),
        (("--device", "tpu"), "--device"),
        (("--grid-m", "0"), "--grid-m"),
        (("--l-phi", "-2"), "--l-phi"),
        (("--ff-method", "qr"), "--ff-method"),
        (("--no-such-option",), "No such option"),
    ],
)
def test_usage_errors_exit_2(tiny_bert, tmp_path, args, needle):
    res = run("analyze", str(tiny_bert), "--out", str(tmp_path / "o"), *args)
    _assert_fails(res, 2, needle)
    assert not (tmp_path / "o").exists()


def test_zero_matrix_is_valid_through_the_cli(tmp_path):
    folder = write_bert(tmp_path / "z")
    _edit_tensors(folder, lambda sd: sd["encoder.layer.0.attention.self.query.weight"].zero_())
    res = run("analyze", str(folder), "--out", str(tmp_path / "o"), "--no-plots")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    qk0 = [m for m in doc["matrices"] if m["layer"] == 0 and m["kind"] == "QK"]
    assert all(m["rank"] == 0 and m["term"] == 0.0 and m["log10_term"] is None for m in qk0)


def test_cuda_asked_for_and_absent(tiny_bert, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    res = run("analyze", str(tiny_bert), "--device", "cuda", "--out", str(tmp_path / "o"))
    _assert_fails(res, 1, "cuda")


def test_hub_id_offline_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    res = run("analyze", "some-org/not-a-cached-model", "--out", str(tmp_path / "o"))
    _assert_fails(res, 1, "some-org/not-a-cached-model", "not in the local cache")


def test_hub_id_resolved_from_local_cache(tmp_path, monkeypatch):
    """A hub id whose snapshot is in the HF cache layout is analysed offline."""
    cache = tmp_path / "cache"
    snap = cache / "models--acme--tiny-bert" / "snapshots" / "0123abc"
    write_bert(snap)
    (cache / "models--acme--tiny-bert" / "refs").mkdir(parents=True)
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache), raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True, raising=False)
    res = run("analyze", "acme/tiny-bert", "--out", str(tmp_path / "o"), "--no-plots")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert doc["model"]["source"].endswith("0123abc")


def test_safetensors_file_with_config_option(tmp_path):
    folder = write_bert(tmp_path / "m")
    f = tmp_path / "alone.safetensors"
    f.write_bytes((folder / "model.safetensors").read_bytes())
    res = run("analyze", str(f), "--out", str(tmp_path / "o"), "--no-plots")
    _assert_fails(res, 1, "config")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(bert_config()))
    res = run("analyze", str(f), "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-plots")
    assert res.exit_code == 0, res.output


def test_main_job_subprocess_on_default_model(tmp_path, minilm_path):
    """`specbound analyze` with no source: the packaged MiniLM, a summary table, a report folder."""
    res = subprocess.run([sys.executable, "-m", "specbound.cli", "analyze", "--out", str(tmp_path / "rep"), "--no-plots"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "L=6" in res.stdout and "N=384" in res.stdout and "Report written to" in res.stdout
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["model"]["L"] == 6 and len(doc["matrices"]) == 156
    assert "warm_start" not in doc["options"] and "while torch was loading" not in res.stdout
    assert re.search(r"^Analysed 156 matrices in \d+\.\d\d s\.$", res.stdout, re.M), res.stdout


def test_custom_mapping_through_the_cli_matches_the_adapter(tiny_bert, tmp_path):
    from builders import bert_mapping

    mapping = bert_mapping(2, 16, 4)
    mfile = tmp_path / "mapping.json"
    mfile.write_text(json.dumps(mapping))
    (tiny_bert / "config.json").unlink()  # the mapping needs no config
    res = run("analyze", str(tiny_bert / "model.safetensors"), "--mapping", str(mfile), "--out", str(tmp_path / "m"), "--no-plots")
    assert res.exit_code == 0, res.output
    custom = json.loads((tmp_path / "m" / "report.json").read_text())
    assert [n["code"] for n in custom["model"]["notes"]] == ["custom_mapping"]
    write_bert(tmp_path / "again")  # the same seed: the same weights, through the BERT adapter
    res = run("analyze", str(tmp_path / "again"), "--out", str(tmp_path / "a"), "--no-plots")
    ref = json.loads((tmp_path / "a" / "report.json").read_text())
    for name in ("spectrum_adaptive", "edelman"):
        assert custom["bounds"][name]["log10_value"] == pytest.approx(ref["bounds"][name]["log10_value"], rel=1e-12)
    mfile.write_text(json.dumps({k: v for k, v in mapping.items() if k != "K"}))
    res = run("analyze", str(tiny_bert / "model.safetensors"), "--mapping", str(mfile), "--out", str(tmp_path / "x"))
    _assert_fails(res, 1, "K", str(mfile))


# --------------------------------------------------------------------------- several SOURCEs, Ray


@pytest.fixture
def fake_many(monkeypatch):
    """Replace the library's analyze_many: record what the command passes, return an empty table."""
    import pandas as pd

    import specbound.parallel as parallel

    calls: list[dict] = []

    def analyze_many(sources, out_dir, **kw):
        calls.append({"sources": list(sources), "out_dir": out_dir, **kw})
        return pd.DataFrame(columns=parallel.COMBINED_COLUMNS), []

    monkeypatch.setattr(parallel, "analyze_many", analyze_many)
    return calls


@pytest.mark.parametrize(
    "args, address",
    [
        ((), None),
        (("--jobs", "2"), None),
        (("--ray",), "local"),  # a local instance
        (("--ray-address", "auto"), "auto"),  # join a cluster
        (("--ray-address", "10.0.0.1:6379"), "10.0.0.1:6379"),
        (("--ray", "--ray-address", "10.0.0.1:6379"), "10.0.0.1:6379"),  # the address wins
    ],
)
def test_ray_flag_and_address_reach_analyze_many(fake_many, tmp_path, args, address):
    res = run("analyze", "a", "b", "--out", str(tmp_path / "o"), "--no-plots", *args)
    assert res.exit_code == 0, res.output
    (call,) = fake_many
    assert call["sources"] == ["a", "b"] and call["ray_address"] == address and call["plots"] is False
    assert call["jobs"] == (2 if "--jobs" in args else 1)


def test_ray_before_a_source_is_a_flag_not_an_address(fake_many, tmp_path):
    """`--ray` takes no value: the word after it is a SOURCE (the old optional-value form is gone)."""
    res = run("analyze", "--ray", "a", "b", "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    assert fake_many[0]["sources"] == ["a", "b"] and fake_many[0]["ray_address"] == "local"


def test_ray_address_usage_errors(fake_many, tmp_path):
    _assert_fails(run("analyze", "a", "b", "--ray-address", " ", "--out", str(tmp_path / "o")), 2, "--ray-address")
    _assert_fails(run("analyze", "a", "b", "--ray-address"), 2, "--ray-address")  # the value is required
    _assert_fails(run("analyze", "a", "b", "--ray=auto"), 2)  # --ray is a flag
    assert fake_many == []


def test_ray_missing_is_a_one_line_error(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    res = run("analyze", str(tiny_bert), str(tiny_bert), "--out", str(tmp_path / "o"), "--ray")
    _assert_fails(res, 1, "error:", "pip install 'specbound[ray]'")
