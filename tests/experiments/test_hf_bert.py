"""The shared HF-BERT helpers of E2 and E3 (experiments/hf_bert.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from specbound.experiments import hf_bert  # noqa: E402
from specbound.experiments.synthetic_language import MASK, SPECIAL_TOKENS  # noqa: E402


def test_mask_tokens_masks_words_only_in_bert_proportions() -> None:
    n_special = len(SPECIAL_TOKENS)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(n_special, 60, (400, 50), generator=g)
    ids[:, 0] = 1  # a special token: never chosen
    inputs, labels = hf_bert.mask_tokens(ids, 60, 0.15, torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert not chosen[:, 0].any() and (inputs[:, 0] == 1).all()
    assert torch.equal(labels[chosen], ids[chosen])
    assert abs(chosen.float().mean().item() - 0.15 * 49 / 50) < 0.01
    masked = (inputs == MASK) & chosen
    assert abs(masked.sum().item() / chosen.sum().item() - 0.8) < 0.03
    assert torch.equal(inputs[~chosen], ids[~chosen])  # untouched where nothing is predicted
    again = hf_bert.mask_tokens(ids, 60, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_bert_config_heads_and_widths() -> None:
    c = hf_bert.bert_config(vocab_size=30, hidden_size=64, num_layers=2, head_dim=16, ff_mult=4,
                            max_positions=33, pad_token_id=3)
    assert (c.num_attention_heads, c.intermediate_size, c.num_hidden_layers) == (4, 256, 2)
    assert (c.hidden_act, c.type_vocab_size, c.max_position_embeddings, c.pad_token_id) == ("gelu", 1, 33, 3)
    assert c.hidden_dropout_prob == 0.0 and c.attention_probs_dropout_prob == 0.0
    with pytest.raises(ValueError, match="not a multiple of the head width"):
        hf_bert.bert_config(vocab_size=30, hidden_size=40, num_layers=1, head_dim=16, ff_mult=4,
                            max_positions=8, pad_token_id=0)


def test_quiet_transformers_restores_the_verbosity() -> None:
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity(hf_logging.INFO)
    try:
        with hf_bert.quiet_transformers():
            assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert hf_logging.get_verbosity() == hf_logging.INFO
        with pytest.raises(RuntimeError), hf_bert.quiet_transformers():
            raise RuntimeError("boom")
        assert hf_logging.get_verbosity() == hf_logging.INFO
    finally:
        hf_logging.set_verbosity(old)


def test_train_loop_and_scoring_on_a_tiny_classifier() -> None:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    cfg = hf_bert.bert_config(vocab_size=6, hidden_size=16, num_layers=1, head_dim=8, ff_mult=2,
                              max_positions=5, pad_token_id=5, num_labels=2)
    model = BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (64, 5), generator=g)
    y = x[:, 0].clone()
    steps: list[int] = []
    losses = hf_bert.train_loop(model, hf_bert.classification_batches(x, y, 16, g), steps=40, lr=3e-3,
                                weight_decay=0.0, warmup_frac=0.1, progress=lambda s, n: steps.append(s))
    assert len(losses) == 40 and steps == list(range(1, 41)) and model.training
    nll, correct, count = hf_bert.nll_and_correct(model, x, y, chunk=24)
    assert count == 64 and not model.training
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=x).logits.double(), -1)
    assert nll == pytest.approx(float(-lp[torch.arange(64), y].sum()), rel=1e-9)
    assert correct == int((lp.argmax(-1) == y).sum()) and correct / count > 0.9  # learnt the first bit
    # masked-LM labels: positions with -100 are not scored
    lab = torch.full((4, 5), -100)
    lab[0, 1] = 3
    from transformers import BertForMaskedLM

    _, _, n_scored = hf_bert.nll_and_correct(BertForMaskedLM(cfg), x[:4], lab, chunk=3)
    assert n_scored == 1


def test_a_diverging_loss_names_the_step() -> None:
    class Nan(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2, 2))

        def forward(self, **kw):  # type: ignore[no-untyped-def]
            return type("Out", (), {"loss": self.w.sum() * float("nan")})()

    with pytest.raises(FloatingPointError, match="at step 0 for me"):
        hf_bert.train_loop(Nan(), lambda step: {}, steps=3, lr=1e-3, weight_decay=0.0, warmup_frac=0.1,
                           where=" for me")
