"""``analyze`` with the data side: ``analyze(..., texts=/token_ids=)`` and ``specbound analyze
SOURCE --text FILE`` add the measure attention_effective_rank and the tables; without them the
report is the weight report, unchanged."""

from __future__ import annotations

import json

import pytest

from typer.testing import CliRunner

import specbound
from specbound.cli import app

from tests.data.helpers import tiny_checkpoint


def test_analyze_with_token_ids_adds_the_measure_and_without_changes_nothing(tmp_path):
    ck = tiny_checkpoint(tmp_path / "m")
    plain = specbound.analyze(ck)
    both = specbound.analyze(ck, token_ids=[[2, 5, 6, 7, 3], [2, 8, 3]], attention_options={"n_resamples": 50})
    assert "attention_effective_rank" not in plain.bounds and "attention" not in plain.to_dict()
    assert plain.attention is None
    reason = {d["bound"]: d["reason"] for d in plain.not_evaluated}["attention_effective_rank"]  # listed, with why
    assert "--text" in reason and "--token-ids" in reason
    b = both.bounds["attention_effective_rank"]
    assert b.status == "measure" and "Dhingra" in b.citation and b.value == pytest.approx(both.attention.attention_effective_rank)
    doc = both.to_dict()
    assert doc["attention"]["capacity"]["attention_effective_rank"]["value"] == pytest.approx(b.value)
    assert doc["options"]["bounds"][-1] == "attention_effective_rank"
    d_plain = plain.to_dict()
    for k in ("matrices", "not_analysed"):
        assert doc[k] == d_plain[k]
    assert doc["bounds_not_evaluated"] == [d for d in d_plain["bounds_not_evaluated"]
                                           if d["bound"] != "attention_effective_rank"]
    assert {k: v for k, v in doc["bounds"].items() if k != "attention_effective_rank"} == d_plain["bounds"]


def test_cli_analyze_with_text_writes_the_data_side(tmp_path):
    ck = tiny_checkpoint(tmp_path / "m", tokenizer=True)
    f = tmp_path / "t.txt"
    f.write_text("the model maps sentences to vectors\nit can be used for search\n")
    res = CliRunner().invoke(app, ["analyze", str(ck), "--text", str(f), "--out", str(tmp_path / "o"), "--no-plots"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert doc["bounds"]["attention_effective_rank"]["status"] == "measure"
    assert doc["attention"]["text"]["n_sequences"] == 2
    for name in ("heads.csv", "layers.csv", "sequences.csv", "attention.json"):
        assert (tmp_path / "o" / "attention" / name).is_file()
    assert "attention_effective_rank" in res.stdout


def test_cli_analyze_with_text_draws_the_batches_and_prints_the_data_side_before_the_file_lines(tmp_path, monkeypatch):
    from contextlib import contextmanager

    import specbound.cli.analyze as cli_analyze

    seen = []  # (bar, done, total, description) of every update

    @contextmanager
    def recording_bar(description, **_):
        yield lambda done=None, total=None, description=None, **__: seen.append((description, done, total))

    monkeypatch.setattr(cli_analyze, "progress_bar", recording_bar)
    ck = tiny_checkpoint(tmp_path / "m", tokenizer=True)
    f = tmp_path / "t.txt"
    f.write_text("the model maps sentences to vectors\nit can be used for search\na text\n")
    res = CliRunner().invoke(app, ["analyze", str(ck), "--text", str(f), "--out", str(tmp_path / "o"), "--no-plots",
                                   "--html", str(tmp_path / "page.html")])
    assert res.exit_code == 0, res.output
    batches = [(d, t) for desc, d, t in seen if desc == "data side: forward passes (batches)"]
    assert batches == [(0, 1), (1, 1)]  # 3 sequences, batch size 16: one batch, reported before and after
    out = res.stdout
    assert out.index("attention_effective_rank =") < out.index("Report written to") < out.index("Open the report")
    assert out.index("Analysed ") < out.index("Per layer, text")  # after the weight tables
