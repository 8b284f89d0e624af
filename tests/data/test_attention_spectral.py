"""The fast routes of specbound.data.spectral (Gram eigenvalues with an exact-SVD fallback for P
and S with t ≤ d_h, the Cholesky route for S with t > d_h) against the reference, a dense
``torch.linalg.svdvals`` per matrix: on random matrices built to reach every branch and on the
real attention of the packaged MiniLM, every §8 measure agrees to 1e-10 (relative) and the
integer ones (rank, k90) exactly."""

from __future__ import annotations

import torch

from specbound.data.forward import MEASURES, SEQUENCE_COLUMNS, _stats
from specbound.data.model import capture_attention, load_model
from specbound.data.spectral import (
    GRAM_RESOLVED,
    factored_svdvals,
    gram_svdvals,
    measures_of,
    spectrum,
    svdvals,
)

F64 = torch.float64


def _assert_same_measures(fast: torch.Tensor, ref: torch.Tensor, r: int) -> None:
    a, b = measures_of(fast, r), measures_of(ref, r)
    for m in ("erank", "stable_rank"):
        torch.testing.assert_close(a[m], b[m], rtol=1e-10, atol=0.0, msg=m)
    for m in ("rank", "k90"):
        assert torch.equal(a[m], b[m]), m


def _attention_like(g: torch.Generator, n: int, t: int, scale: float) -> torch.Tensor:
    """Row-stochastic softmax(S) of rank-4 logits: a large ``scale`` makes rows peaked and alike,
    i.e. nearly rank-deficient matrices (the ones the Gram route cannot resolve)."""
    q, k = torch.randn(n, t, 4, generator=g, dtype=F64), torch.randn(n, t, 4, generator=g, dtype=F64)
    return torch.softmax(scale * q @ k.mT, -1)


def test_gram_route_with_fallback_equals_svdvals_on_random_attention():
    g = torch.Generator().manual_seed(0)
    t = 40
    p = torch.cat([_attention_like(g, 30, t, 0.3), _attention_like(g, 30, t, 3.0),
                   torch.rand(10, t, t, generator=g, dtype=F64).softmax(-1)])
    p[0] = 1.0 / t  # uniform rows: rank 1, every other value an exact zero in theory
    p[1] = torch.eye(t, dtype=F64)
    gram = gram_svdvals(p)
    low = gram[:, -1] < GRAM_RESOLVED * gram[:, 0]
    assert 5 < int(low.sum()) < len(p) - 5  # both branches are exercised
    fast, ref = spectrum(p), svdvals(p)
    torch.testing.assert_close(fast[~low], ref[~low], rtol=1e-6, atol=0.0)  # trusted Gram values
    assert torch.equal(fast[low], ref[low])  # the rest: the reference itself
    _assert_same_measures(fast, ref, t)
    assert measures_of(fast, t)["rank"][0] == 1 and measures_of(fast, t)["rank"][1] == t


def test_cholesky_route_for_t_above_d_equals_svdvals_and_falls_back_where_it_must():
    g = torch.Generator().manual_seed(1)
    n, t, d = 24, 50, 8
    q, k = torch.randn(n, t, d, generator=g, dtype=F64), torch.randn(n, t, d, generator=g, dtype=F64)
    q[0] = q[0, :1]  # identical query rows: q has rank 1, q^T q is singular (no Cholesky factor)
    k[1, :, 0] = 1e-7 * k[1, :, 1]  # nearly dependent key columns: a tiny singular value of q k^T
    q[2] *= torch.logspace(0, -6, d, dtype=F64)  # an ill-conditioned q
    fast = factored_svdvals(q, k)
    ref = svdvals(q @ k.mT)
    assert fast.shape == (n, d)
    assert float(ref[:, d:].max()) < 1e-12 * float(ref[:, 0].min())  # the t - d values the route omits are zeros
    ref = ref[:, :d]
    _assert_same_measures(fast, ref, t)
    torch.testing.assert_close(fast[0, 1:], torch.zeros(d - 1, dtype=F64), rtol=0.0, atol=1e-12 * float(ref[0, 0]))
    assert measures_of(fast, t)["rank"][0] == 1
    torch.testing.assert_close(fast[3:], ref[3:], rtol=1e-9, atol=0.0)  # well-conditioned pairs: every value


def test_minilm_attention_by_the_fast_routes_equals_svdvals_per_head(minilm_path):
    """Real attention, a right-padded batch of several lengths (runs of equal length, the t ≤ d_h
    and t > d_h routes of S): every measure of every (sequence, layer, head) as ``_stats``
    computes it, against the reference from the same captured tensors, one dense SVD per matrix
    of each sequence's real block."""
    loaded = load_model(minilm_path)
    tok = loaded.tokenizer
    texts = ["Hello.", "Sentence embeddings map text to vectors.", "Sentence embeddings map text to vectors.",
             ("This model maps sentences and paragraphs to a 384 dimensional dense vector space and can be used "
             "for tasks like clustering or semantic search across a large collection of documents.")]
    ids = sorted((tok(s)["input_ids"] for s in texts), key=len)
    lens = [len(x) for x in ids]
    assert lens[0] < lens[1] == lens[2] <= 32 < lens[3]  # both routes of S, a run of two equal lengths
    T = lens[-1]
    x = torch.zeros(len(ids), T, dtype=torch.long)
    mask = torch.zeros_like(x)
    for i, s in enumerate(ids):
        x[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    with torch.no_grad(), capture_attention(loaded.model) as calls:
        res = loaded.model(input_ids=x, attention_mask=mask, output_hidden_states=True)
    stats = list(_stats(list(calls), res.hidden_states, lens))
    for i, t in enumerate(lens):
        p = torch.stack([c.probs[i, :, :t, :t] for c in calls]).to(F64)  # [L, H, t, t]
        qk = torch.stack([c.query[i, :, :t].to(F64) @ c.key[i, :, :t].to(F64).mT for c in calls])
        ref_p, ref_s = measures_of(svdvals(p), t), measures_of(svdvals(qk), t)
        got = torch.as_tensor(stats[i][0])  # [L, H, columns]
        for m in MEASURES:
            for ref, col in ((ref_p, f"P_{m}"), (ref_s, f"S_{m}")):
                v = got[..., SEQUENCE_COLUMNS.index(col)]
                if m in ("rank", "k90"):
                    assert torch.equal(v, ref[m]), (t, col)
                else:
                    torch.testing.assert_close(v, ref[m], rtol=1e-10, atol=0.0, msg=f"t={t} {col}")
