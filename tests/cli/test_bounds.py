"""`specbound bounds`, `specbound compare`, and `analyze --seq-len / --init` with a user bound
end to end (API registration → CLI → JSON)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

import specbound.bounds as bmod
from specbound.bounds import Bound, BoundResult, register_bound
from specbound.cli import app

from builders import write_bert

runner = CliRunner()

CATALOGUE = [
    "spectrum_adaptive", "edelman", "edelman_seq_len", "trauger_tewari_l11", "trauger_tewari_proxy",
    "bartlett_spectral", "neyshabur_pac_bayes", "effective_rank", "log_prod_spec", "sum_fro",
    "fro_over_spec", "param_count",
]


def run(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


class HeadCount(Bound):
    name = "user_head_count"
    title = "H·L (a user's bound)"
    citation = "Test suite."
    status = "measure"

    def evaluate(self, spectra, params):
        return BoundResult(self.name, math.log10(len(spectra.layers) * len(spectra.layers[0].qk)), self.status,
                           self.citation, notes=["from a test"])


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(bmod, "_REGISTRY", dict(bmod._REGISTRY))
    return bmod._REGISTRY


def test_bounds_lists_every_family_with_status_and_needs(registry, tmp_path):
    register_bound(HeadCount())
    res = run("bounds", "--csv", str(tmp_path / "cat.csv"))
    assert res.exit_code == 0, res.output
    for name in CATALOGUE + ["user_head_count"]:
        assert name in res.stdout, name
    cat = pd.read_csv(tmp_path / "cat.csv").set_index("name")
    assert set(CATALOGUE) <= set(cat.index)
    assert cat.loc["edelman_seq_len", "needs"] == "seq_len (--seq-len)"
    assert "init" in cat.loc["bartlett_spectral", "needs"]
    assert cat.loc["trauger_tewari_l11", "status"] == "measure" and cat.loc["bartlett_spectral", "status"] == "baseline"
    assert cat["citation"].str.len().min() > 5


def test_analyze_with_user_bound_seq_len_and_init(registry, tmp_path):
    register_bound(HeadCount())
    a, b = write_bert(tmp_path / "a", seed=0), write_bert(tmp_path / "b", seed=1)
    out = tmp_path / "rep"
    res = run("analyze", str(a), "--out", str(out), "--no-plots", "--seq-len", "128", "--init", str(b))
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "report.json").read_text())
    assert set(doc["bounds"]) == set(CATALOGUE) | {"user_head_count"}
    assert doc["bounds"]["user_head_count"]["value"] == pytest.approx(8.0)  # L = 2, H = 4
    assert doc["bounds"]["edelman_seq_len"]["params"]["seq_len"] == 128
    assert doc["options"]["seq_len"] == 128 and doc["options"]["init"] == str(b)
    assert [d["bound"] for d in doc["bounds_not_evaluated"]] == ["attention_effective_rank"]  # no --text
    assert "user_head_count" in pd.read_csv(out / "bounds.csv")["bound"].tolist()


def test_analyze_init_itself_and_missing_seq_len_are_listed_not_silent(tmp_path):
    a = write_bert(tmp_path / "a")
    res = run("analyze", str(a), "--out", str(tmp_path / "r"), "--no-plots", "--init", str(a))
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    skipped = {d["bound"] for d in doc["bounds_not_evaluated"]}
    assert skipped == {"edelman_seq_len", "bartlett_spectral", "neyshabur_pac_bayes", "attention_effective_rank"}
    assert "not evaluated" in res.stdout and "edelman_seq_len" in res.stdout


def test_analyze_bad_init_and_seq_len_are_one_line_errors(tmp_path):
    a, c = write_bert(tmp_path / "a"), write_bert(tmp_path / "c", L=3)
    res = run("analyze", str(a), "--out", str(tmp_path / "r"), "--init", str(c))
    assert res.exit_code == 1 and "different architecture" in res.output and "n_layers 2 vs 3" in res.output
    assert not (tmp_path / "r").exists()
    res = run("analyze", str(a), "--out", str(tmp_path / "r"), "--seq-len", "1")
    assert res.exit_code == 1 and "seq_len must be an integer >= 2" in res.output
    res = run("analyze", str(a), "--out", str(tmp_path / "r"), "--bounds", "edelman_seq_len")
    assert res.exit_code == 1 and "needs the sequence length" in res.output


def test_compare_writes_table_and_chart(tmp_path):
    a = write_bert(tmp_path / "base" / "model", seed=0)
    b = write_bert(tmp_path / "tuned" / "model", seed=3)
    out = tmp_path / "cmp"
    res = run("compare", str(a), str(b), "--out", str(out), "--seq-len", "64", "--init", str(a))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "compare.csv")
    assert list(table.columns) == ["family", "status", "log10 base/model", "log10 tuned/model"]
    assert set(table["family"]) == set(CATALOGUE)
    # the base model against itself: distance families not evaluated (empty cells), said in the output
    row = table.set_index("family").loc["bartlett_spectral"]
    assert pd.isna(row["log10 base/model"]) and math.isfinite(row["log10 tuned/model"])
    assert "not evaluated" in res.stdout
    assert (out / "compare.png").stat().st_size > 10_000
    res = run("compare", str(a), "--out", str(out))
    assert res.exit_code == 2 and "at least two" in res.output
