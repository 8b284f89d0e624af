"""Inputs of the data side: the model card split into sentences, text and token-id files, and
every bad input as a one-line error with exit status 1 (``specbound attention``)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from specbound.cli import app
from specbound.data.texts import model_card_sentences, random_like, read_text_file, read_token_ids
from specbound.errors import InputError

from tests.data.helpers import tiny_checkpoint

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["attention", *args])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny BERT with a tokenizer, and the same without one."""
    base = tmp_path_factory.mktemp("att")
    return tiny_checkpoint(base / "tok", tokenizer=True), tiny_checkpoint(base / "notok")


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 1, res.output
    msg = " ".join(res.output.split())
    assert msg.startswith("error:") and "Traceback" not in res.output
    for n in needles:
        assert n in msg, msg


def test_model_card_is_split_into_prose_sentences(minilm_path):
    s = model_card_sentences(minilm_path / "README.md")
    assert len(s) > 15
    assert all(len(x.split()) >= 4 for x in s)
    assert not any(x.startswith(("#", "|", "```", "---")) or "](" in x or "import " in x for x in s)
    assert any("sentence" in x for x in s)


def test_text_and_token_id_files(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("first line\n\n   \nsecond line\n")
    lines, src = read_text_file(f)
    assert lines == ["first line", "second line"] and src.lines == 2
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_text_file(tmp_path / "e.txt")
    (tmp_path / "b.txt").write_text("\n  \n\t\n")
    with pytest.raises(InputError, match="only blank lines"):
        read_text_file(tmp_path / "b.txt")
    ids, _ = read_token_ids([[1, 2], [], [3]])
    assert ids == [[1, 2], [3]]
    for bad in ([1, 2], [[1, -2]], [["a"]], [[]]):
        with pytest.raises(InputError):
            read_token_ids(bad)


def test_random_tokens_keep_lengths_and_special_positions():
    ids, special = [[2, 10, 11, 3], [2, 12, 3]], [[True, False, False, True], [True, False, True]]
    a = random_like(ids, special, 50, [0, 1, 2, 3, 4], seed=1)
    assert [len(x) for x in a] == [4, 3] and a[0][0] == 2 and a[0][-1] == 3 and a[1][-1] == 3
    assert all(5 <= t < 50 for x, m in zip(a, special) for t, sp in zip(x, m) if not sp)
    assert a == random_like(ids, special, 50, [0, 1, 2, 3, 4], seed=1)
    assert a != random_like(ids, special, 50, [0, 1, 2, 3, 4], seed=2)


def test_cli_writes_every_output_and_truncates_long_lines(ckpt, tmp_path):
    tok, _ = ckpt
    f = tmp_path / "t.txt"
    f.write_text("the model maps sentences to vectors\n\nit is used for search\n" + "the text " * 20 + "\n")
    out = tmp_path / "o"
    res = run(str(tok), "--text", str(f), "--out", str(out), "--random-tokens", "--batch-size", "2",
              "--max-length", "12")
    assert res.exit_code == 0, res.output
    for name in ("heads.csv", "layers.csv", "sequences.csv", "attention.json", "attention_erank_heatmap.png",
                 "attention_depth.png", "logit_k90_vs_weight.png", "hidden_rank.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    doc = json.loads((out / "attention.json").read_text())
    assert doc["text"]["n_sequences"] == 3 and doc["text"]["truncated"] == 1
    assert doc["capacity"]["attention_effective_rank"]["status"] == "measure"
    assert "Dhingra 2025" in doc["capacity"]["attention_effective_rank"]["label"]
    assert set(doc["capacity"]["attention_effective_rank"]["per_source"]) == {"text", "random"}
    assert {"model", "options", "versions", "text", "random"} <= set(doc)
    assert "truncated to 12" in " ".join(res.output.split())
    assert "attention_effective_rank" in res.stdout and str(f) in " ".join(res.stdout.split())
    import pandas as pd

    heads = pd.read_csv(out / "heads.csv")
    assert list(heads.columns[:4]) == ["source", "layer", "head", "n_sequences"]
    assert set(heads["source"]) == {"text", "random"} and "weight_qk_k90" in heads.columns
    assert "P_erank_ci_low" in heads.columns and "norm_entropy_ci_high" in heads.columns


def test_cli_max_length_above_the_model_maximum_is_cut_and_said(ckpt, tmp_path):
    tok, _ = ckpt
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([list(range(5, 45)), [5, 6, 7]]))  # 40 tokens; the tiny models take 16
    res = run(str(tok), "--token-ids", str(ids), "--out", str(tmp_path / "o"), "--no-plots", "--max-length", "100")
    assert res.exit_code == 0, res.output
    msg = " ".join(res.output.split())
    assert "above the model's maximum 16" in msg and "1 sequence(s) longer than 16 tokens truncated" in msg


@pytest.mark.parametrize("content, needle", [("", "the file is empty"), ("\n \n\t\n", "only blank lines")])
def test_cli_empty_and_blank_text_files(ckpt, tmp_path, content, needle):
    f = tmp_path / "t.txt"
    f.write_text(content)
    res = run(str(ckpt[0]), "--text", str(f), "--out", str(tmp_path / "o"))
    _one_line_error(res, needle)
    assert not (tmp_path / "o").exists()


def test_cli_no_tokenizer_and_no_ids_says_which_to_pass(ckpt, tmp_path):
    res = run(str(ckpt[1]), "--out", str(tmp_path / "o"))
    _one_line_error(res, "no tokenizer", "--token-ids FILE")


def test_cli_bad_device_and_bad_ids(ckpt, tmp_path):
    res = run(str(ckpt[0]), "--device", "tpu", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and " ".join(res.output.split()).startswith("error: --device tpu: not a torch device")
    ids = tmp_path / "ids.json"
    ids.write_text("[[1, 2, 99]]")
    _one_line_error(run(str(ckpt[1]), "--token-ids", str(ids), "--out", str(tmp_path / "o")), "outside the vocabulary")
    ids.write_text("{not json")
    _one_line_error(run(str(ckpt[1]), "--token-ids", str(ids), "--out", str(tmp_path / "o")), "not valid JSON")
