"""P and S as specbound captures them, against the same quantities recomputed by hand from the
model's weights and hidden states (bounds.md §8), for a BERT, a GPT-2 and a LLaMA-family model
(GQA: 4 query heads on 2 KV heads, rotary embeddings), in a right-padded batch; padded and
unpadded runs give the same tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import specbound
from specbound.data.model import capture_attention
from specbound.measures import effective_rank, numerical_rank, stable_rank

from builders import build
from tests.data.helpers import hand_qk, softmax_masked

IDS = [[5, 9, 3, 17, 22, 8, 41], [7, 2, 30, 11], [19, 4, 4, 28, 6, 13]]
CAUSAL = {"bert": False, "gpt2": True, "llama": True}


def _k90(s: np.ndarray) -> int:
    c = np.cumsum(s**2)
    return int(np.searchsorted(c, 0.9 * c[-1] * (1 - 1e-12)) + 1)


@pytest.fixture(scope="module", params=["bert", "gpt2", "llama"])
def case(request):
    family = request.param
    model = build(family, seed=1)
    hand = []  # per sequence, per layer: (P [H, t, t], S [H, t, t]) by hand, unpadded
    with torch.no_grad():
        for x in IDS:
            hs = model(input_ids=torch.tensor([x]), output_hidden_states=True).hidden_states
            per = []
            for layer in range(model.config.num_hidden_layers):
                q, k = hand_qk(model, family, layer, hs[layer][0])
                s = q @ k.transpose(-1, -2)
                per.append((softmax_masked(s, 1 / math.sqrt(q.shape[-1]), CAUSAL[family]), s))
            hand.append(per)
    return family, model, hand


def test_captured_p_and_s_equal_the_hand_recomputation_in_a_padded_batch(case):
    family, model, hand = case
    T = max(map(len, IDS))
    ids = torch.zeros(len(IDS), T, dtype=torch.long)
    mask = torch.zeros(len(IDS), T, dtype=torch.long)
    for i, x in enumerate(IDS):
        ids[i, :len(x)], mask[i, :len(x)] = torch.tensor(x), 1
    before = model.config._attn_implementation
    with torch.no_grad(), capture_attention(model) as calls:
        model(input_ids=ids, attention_mask=mask)
    assert model.config._attn_implementation == before  # restored
    assert len(calls) == model.config.num_hidden_layers
    H = model.config.num_attention_heads
    g = torch.arange(H) // (H // calls[0].key.shape[1])
    if family == "llama":
        assert calls[0].key.shape[1] == 2  # GQA: the captured keys are the KV heads
    for i, x in enumerate(IDS):
        t = len(x)
        for layer, c in enumerate(calls):
            p_hand, s_hand = hand[i][layer]
            p = c.probs[i, :, :t, :t].double()
            s = c.query[i, :, :t].double() @ c.key[i, g, :t].double().transpose(-1, -2)
            torch.testing.assert_close(p, p_hand, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(s, s_hand, atol=1e-3 * float(s_hand.abs().max()), rtol=1e-4)
            torch.testing.assert_close(p.sum(-1), torch.ones(H, t, dtype=torch.float64), atol=1e-5, rtol=0)
            if CAUSAL[family]:
                assert float(p.triu(1).abs().max()) == 0.0


def test_measures_match_the_hand_matrices_and_padding_changes_nothing(case):
    family, model, hand = case
    padded = specbound.attention(model, token_ids=IDS, batch_size=3, n_resamples=100)
    single = specbound.attention(model, token_ids=IDS, batch_size=1, n_resamples=100)
    a, b = padded.sequences, single.sequences
    assert len(a) == len(IDS) * model.config.num_hidden_layers * model.config.num_attention_heads
    pd.testing.assert_frame_equal(a[["source", "sequence", "layer", "head", "n_tokens"]],
                                  b[["source", "sequence", "layer", "head", "n_tokens"]])
    num = [c for c in a.columns if c not in ("source", "sequence", "layer", "head", "n_tokens")]
    np.testing.assert_allclose(a[num].to_numpy(), b[num].to_numpy(), rtol=2e-4, atol=1e-6)
    assert (a["P_rank"].to_numpy() == b["P_rank"].to_numpy()).all()
    assert (a["S_rank"].to_numpy() == b["S_rank"].to_numpy()).all()
    for row in a.itertuples():
        p, s = (m[row.head].numpy() for m in hand[row.sequence][row.layer])
        t = len(IDS[row.sequence])
        sp, ss = np.linalg.svd(p, compute_uv=False), np.linalg.svd(s, compute_uv=False)
        assert row.P_erank == pytest.approx(effective_rank(sp), rel=1e-3, abs=1e-4)
        assert row.P_stable_rank == pytest.approx(stable_rank(sp), rel=1e-3, abs=1e-4)
        assert row.S_erank == pytest.approx(effective_rank(ss), rel=1e-3)
        assert row.S_stable_rank == pytest.approx(stable_rank(ss), rel=1e-3)
        assert row.S_rank == numerical_rank(ss, t) == min(t, s.shape[0], model.config.hidden_size // 4 if family != "llama" else 8)
        assert abs(row.S_k90 - _k90(ss)) <= 1 and abs(row.P_k90 - _k90(sp)) <= 1
        h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1)
        n = np.arange(1, t + 1) if CAUSAL[family] else np.full(t, t)
        assert row.entropy == pytest.approx(h.mean(), rel=1e-3, abs=1e-5)
        assert row.norm_entropy == pytest.approx(np.mean(h[n >= 2] / np.log(n[n >= 2])), rel=1e-3, abs=1e-5)
    assert padded.info["model"]["attention"] == ("causal" if CAUSAL[family] else "bidirectional")
    assert np.isfinite(padded.heads["weight_qk_k90"]).all()
