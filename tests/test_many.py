"""Many checkpoints: process pool (spawn) through the CLI, in-process, combined table, one
SOURCE unchanged, usage errors, the optional Ray path."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

import specbound
from specbound.cli import app
from specbound.errors import InputError
from specbound.parallel import analyze_many, report_dirs

from builders import write_bert

runner = CliRunner()


@pytest.fixture
def two(tmp_path):
    return [write_bert(tmp_path / "a" / "model", seed=1), write_bert(tmp_path / "b" / "model", seed=2)]


def test_process_pool_through_the_cli(two, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "missing"
    res = runner.invoke(app, ["analyze", str(two[0]), str(missing), str(two[1]), "--out", str(out),
                              "--jobs", "2", "--no-plots", "--bounds", "spectrum_adaptive,edelman"])
    assert res.exit_code == 1, res.output  # one bad source: the others are still analysed
    assert "missing" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in out.iterdir()) == ["combined.csv", "model", "model-2"]
    table = pd.read_csv(out / "combined.csv")
    assert list(table.source) == [str(two[0]), str(two[1])]
    assert list(table.columns[:10]) == ["source", "report", "model_type", "L", "N", "H", "H_kv", "d_h", "d_ff", "elapsed_s"]
    for src, sub in zip(two, ["model", "model-2"]):
        doc = json.loads((out / sub / "report.json").read_text())
        single = specbound.analyze(src, bounds="spectrum_adaptive,edelman")
        row = table[table.report == sub].iloc[0]
        for name in ("spectrum_adaptive", "edelman"):
            assert doc["bounds"][name]["log10_value"] == pytest.approx(single.bounds[name].log10_value, rel=1e-12)
            assert row[f"log10_{name}"] == pytest.approx(single.bounds[name].log10_value, rel=1e-12)
    assert not table.isna().any().any()


def test_in_process_with_cache_and_plots_off(two, tmp_path):
    table, failed = analyze_many(two, tmp_path / "o", jobs=1, plots=False, cache=tmp_path / "c",
                                 bounds="spectrum_adaptive")
    assert failed == [] and len(table) == 2
    assert (tmp_path / "o" / "combined.csv").is_file()
    doc = json.loads((tmp_path / "o" / "model" / "report.json").read_text())
    assert doc["options"]["cache"]["misses"] == 10  # 5 blocks per layer (qk, ov, m_in, m_out, vo)


def test_one_source_keeps_the_report_in_out(two, tmp_path):
    res = runner.invoke(app, ["analyze", str(two[0]), "--out", str(tmp_path / "r"), "--no-plots", "--jobs", "3"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "report.json").is_file() and not (tmp_path / "r" / "combined.csv").exists()


@pytest.mark.parametrize("extra", [["--json", "x.json"], ["--csv", "x.csv"], ["--jobs", "0"], ["--approx", "--dense"]])
def test_usage_errors(two, tmp_path, extra):
    res = runner.invoke(app, ["analyze", str(two[0]), str(two[1]), "--out", str(tmp_path / "o"), *extra])
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "o").exists()


def test_report_dirs_are_distinct_and_safe(tmp_path):
    (tmp_path / "x").mkdir()
    assert report_dirs([tmp_path / "x", str(tmp_path / "x") + "/", "org/name", "a b?"]) == ["x", "x-2", "org__name", "a_b"]


def test_ray_missing_is_a_clear_error(two, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(InputError, match=r"specbound\[ray\]"):
        analyze_many(two, tmp_path / "o", ray_address="local")
    res = runner.invoke(app, ["analyze", str(two[0]), str(two[1]), "--out", str(tmp_path / "o"), "--ray"])
    assert res.exit_code == 1 and "pip install" in res.output


def test_ray_local_instance(two, tmp_path):
    pytest.importorskip("ray")
    table, failed = analyze_many(two, tmp_path / "o", ray_address="local", plots=False, bounds="spectrum_adaptive")
    assert failed == [] and len(table) == 2
    assert (tmp_path / "o" / "model-2" / "report.json").is_file()
