"""The packaged MiniLM on its own model card: finite values, erank(P) in [1, t], and the real
text's effective rank differs from the random-token baseline."""

from __future__ import annotations

import numpy as np
import pytest

import specbound


@pytest.fixture(scope="module")
def minilm_att(minilm_path):
    return specbound.attention(minilm_path, max_sequences=6, random_tokens=True, n_resamples=200)


def test_minilm_on_its_model_card(minilm_att):
    att = minilm_att
    assert att.info["text"]["source"]["kind"] == "model_card" and att.info["text"]["n_sequences"] == 6
    seq = att.sequences
    num = seq.drop(columns=["source"]).to_numpy(dtype=float)
    assert np.isfinite(num).all()
    assert (seq["P_erank"] >= 1 - 1e-9).all() and (seq["P_erank"] <= seq["n_tokens"] + 1e-9).all()
    assert (seq["S_rank"] <= 32).all()  # d_h = 32 bounds the logit field's rank
    assert len(att.heads) == 2 * 6 * 12 and len(att.layers) == 2 * 6
    text, rand = att.capacity("text"), att.capacity("random")
    assert att.attention_effective_rank == pytest.approx(att.heads.query("source == 'text'")["P_erank_mean"].sum())
    # same lengths, other tokens: the attention is measurably different (issue 15 asks by how much)
    lay = att.layers.pivot(index="layer", columns="source", values="P_erank_mean")
    assert abs(text - rand) > 0.02 * rand, (text, rand)
    assert (lay["text"] - lay["random"]).abs().max() > 0.5
