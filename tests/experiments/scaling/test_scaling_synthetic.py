"""E2's synthetic family (scaling/synthetic.py): the trainer learns beyond the unigram
baseline, writes a checkpoint with the recipe's shape and reuses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from specbound.experiments.scaling import synthetic as synth

pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_trained_encoder_beats_unigram_and_untrained_does_not(tmp_path: Path) -> None:
    recipe = synth.QUICK_RECIPE
    corpora = synth.make_corpora(recipe, seed=0)
    torch.manual_seed(0)
    from transformers import BertForMaskedLM

    untrained = BertForMaskedLM(synth.bert_config(1, 64, corpora.language.vocab_size, recipe))
    ev0 = synth.evaluate_masked(untrained, corpora, recipe, seed=0)
    assert ev0["heldout_masked_ce"] > ev0["unigram_masked_ce"]  # control: the check can fail

    meta = synth.train_one(1, 64, tmp_path / "m", corpora, recipe, seed=0)
    assert meta["reused"] is False
    assert meta["heldout_masked_tokens"] > 1000
    assert meta["heldout_masked_ce"] < meta["unigram_masked_ce"] - 0.1, meta
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "config.json").is_file()
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]) == (1, 64, 2, 256)
    again = synth.train_one(1, 64, tmp_path / "m", corpora, recipe, seed=0)
    assert again["reused"] is True and again["heldout_masked_ce"] == meta["heldout_masked_ce"]
