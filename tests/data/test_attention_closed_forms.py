"""Every §8 measure against its closed form on a hand-built one-layer BERT with known Q/K, and
the vectorised measures against specbound.measures (bounds.md §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import specbound
from specbound.data.spectral import entropies, factored_svdvals, gram_svdvals, measures_of, svdvals
from specbound.measures import effective_rank, numerical_rank, stable_rank

N = V = 16  # hidden size = vocabulary: one-hot embeddings
T = 9


def _one_layer(kind: str):
    """One layer, one head (d_h = N): embeddings one-hot rows (positions and token types zero,
    LayerNorm without scale/shift). ``self``: W_Q = W_K = 3·I, so S_ii − S_ij = 9·(N + N/(N−1))
    and P → I. ``uniform``: W_K = 0 with a constant key bias, every key identical, P = 11ᵀ/t.
    In float64: a float32 forward leaves rounding noise of ≈1e-7 in P, above the numerical-rank
    threshold 1e-10·t of bounds.md §3, so the exact ranks of the closed forms need float64."""
    import transformers as tr

    cfg = tr.BertConfig(vocab_size=V, hidden_size=N, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=8, max_position_embeddings=32, pad_token_id=0)
    m = tr.BertModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.embeddings.word_embeddings.weight.copy_(torch.eye(V))
        m.embeddings.LayerNorm.weight.fill_(1.0)
        a = m.encoder.layer[0].attention.self
        a.query.weight.copy_(3.0 * torch.eye(N))
        if kind == "self":
            a.key.weight.copy_(3.0 * torch.eye(N))
        else:
            a.key.bias.copy_(torch.linspace(-1, 1, N))
    return m.double()


IDS = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [3, 5, 7, 9, 11]]


def test_self_attention_only_gives_identity():
    att = specbound.attention(_one_layer("self"), token_ids=IDS, n_resamples=100)
    for row in att.sequences.itertuples():
        t = row.n_tokens
        assert row.P_erank == pytest.approx(t, rel=1e-6)
        assert row.P_stable_rank == pytest.approx(t, rel=1e-6)
        assert row.P_rank == t and row.P_k90 == math.ceil(0.9 * t)
        assert row.entropy == pytest.approx(0.0, abs=1e-6) and row.norm_entropy == pytest.approx(0.0, abs=1e-6)
        assert row.S_rank == t  # distinct one-hot tokens: Q Kᵀ = 9 X Xᵀ has rank t (t < N)


def test_identical_keys_give_uniform_rows():
    att = specbound.attention(_one_layer("uniform"), token_ids=IDS, n_resamples=100)
    for row in att.sequences.itertuples():
        t = row.n_tokens
        assert row.P_rank == 1 and row.P_k90 == 1
        assert row.P_erank == pytest.approx(1.0, abs=1e-9) and row.P_stable_rank == pytest.approx(1.0, abs=1e-9)
        assert row.entropy == pytest.approx(math.log(t), rel=1e-9)
        assert row.norm_entropy == pytest.approx(1.0, rel=1e-9)
        assert row.S_rank == 1 and row.S_erank == pytest.approx(1.0, abs=1e-9)  # S = (Q b) 1ᵀ
    h = att.heads.iloc[0]
    assert h["P_rank_mean"] == 1.0 and h["P_rank_std"] == 0.0
    assert h["P_rank_ci_low"] == h["P_rank_ci_high"] == 1.0  # a constant column: the interval is the point
    assert h["P_erank_ci_low"] <= h["P_erank_mean"] <= h["P_erank_ci_high"]
    assert att.attention_effective_rank == pytest.approx(1.0)  # one layer, one head


def test_vectorised_measures_equal_specbound_measures():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 7, 7, generator=g, dtype=torch.float64)
    a[0] = torch.outer(torch.randn(7, generator=g, dtype=torch.float64), torch.ones(7, dtype=torch.float64))
    a[1] = 0.0
    s = svdvals(a)
    m = measures_of(s, 7)
    k90 = lambda v: 0 if v.sum() == 0 else int(np.argmax(np.cumsum(v**2) >= 0.9 * np.sum(v**2)) + 1)  # noqa: E731
    for i in range(5):
        v = s[i].numpy()
        assert m["erank"][i] == pytest.approx(effective_rank(v), rel=1e-12, abs=1e-300)
        assert m["stable_rank"][i] == pytest.approx(stable_rank(v), rel=1e-12)
        assert m["rank"][i] == numerical_rank(v, 7)
        assert m["k90"][i] == k90(v)
    assert m["rank"][0] == 1 and m["rank"][1] == 0 and m["erank"][1] == 0


def test_factored_and_gram_routes_equal_the_dense_svd():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(3, 20, 4, generator=g, dtype=torch.float64), torch.randn(3, 20, 4, generator=g, dtype=torch.float64)
    dense = svdvals(q @ k.mT)
    torch.testing.assert_close(factored_svdvals(q, k), dense[:, :4])
    assert float(dense[:, 4:].max()) < 1e-12 * float(dense[:, 0].min())  # the exact zeros the factored route omits
    x = torch.randn(2, 6, 30, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gram_svdvals(x), svdvals(x), rtol=1e-8, atol=1e-10)


def test_entropies_of_a_causal_uniform_matrix():
    t = 5
    p = torch.tril(torch.ones(t, t, dtype=torch.float64))
    p = p / p.sum(-1, keepdim=True)
    n = torch.arange(1, t + 1)
    ent, norm = entropies(p, n)
    assert float(ent) == pytest.approx(np.mean(np.log(np.arange(1, t + 1))))
    assert float(norm) == pytest.approx(1.0)  # every row with ≥ 2 keys is uniform over them
    _, none = entropies(torch.ones(1, 1, dtype=torch.float64), torch.ones(1))
    assert math.isnan(float(none))  # a one-token sequence has no normalised entropy
