"""The measures of bounds.md §8 on batches of small matrices (attention matrices, logit fields,
hidden states), vectorised over every leading dimension.

The per-matrix definitions are those of :mod:`specbound.measures` (bounds.md §3): Roy–Vetterli
effective rank, stable rank, numerical rank ``#{σ_i > 1e-10 · r · max(σ_1, 1)}``, plus ``k90``
(§8: the number of singular values holding 90% of ``Σ σ²``). They are computed here on
``[..., k]`` tensors of singular values at once instead of one matrix at a time (a MiniLM run
has 72 heads × 2 matrices per sequence); ``tests/data/test_attention_closed_forms.py`` checks every
value against :mod:`specbound.measures`, and ``tests/data/test_attention_spectral.py`` the fast
spectra (:func:`spectrum`, :func:`factored_svdvals`) against a dense SVD per matrix, on random
matrices and on MiniLM's attention: every measure to 1e-10 relative, rank and k90 exactly.
Zero-matrix conventions are the same: rank, stable rank, effective rank and k90 all 0.
"""

from __future__ import annotations

import torch

from specbound.measures import RANK_RTOL

__all__ = ["GRAM_RESOLVED", "K90_SHARE", "entropies", "entropies_of_rows", "factored_svdvals", "gram_svdvals",
           "measures_of", "row_entropies", "spectrum", "svdvals"]

#: share of Σ σ² that ``k90`` holds
K90_SHARE = 0.9
#: :func:`spectrum` trusts the Gram route for a matrix whose singular values are all above this
#: fraction of σ_1 (well above its ≈1e-7·σ_1 resolution and the rank threshold 1e-10·r·σ_1)
GRAM_RESOLVED = 1e-5


def svdvals(a: torch.Tensor) -> torch.Tensor:
    """Singular values of ``a [..., m, n]`` in float64, descending: ``[..., min(m, n)]``."""
    return torch.linalg.svdvals(a.to(torch.float64))


def spectrum(a: torch.Tensor, n: torch.Tensor | None = None) -> torch.Tensor:
    """Singular values of square ``a [..., n, n]``, float64, descending, as exact as
    :func:`svdvals` for every measure of :func:`measures_of`, at the cost of a symmetric
    eigenproblem for most matrices.

    First ``sqrt(eig(a aᵀ))`` (float64 Gram, one batched symmetric eigenproblem: about half the
    cost of the SVD). Why that is accurate enough: the eigenvalues of the Gram have an absolute
    error δλ ≈ c·ε·σ_1² (ε = 2⁻⁵³, c a small multiple of 1), so a value σ_i ≥ g·σ_1 with
    g = :data:`GRAM_RESOLVED` = 1e-5 has ``δσ_i = δλ / 2σ_i ≤ c·ε·σ_1 / 2g ≈ c·6e-12·σ_1``
    (relative ≤ c·6e-7 at the smallest, far less above). The effective rank uses the values only
    through the weights ``q_i = σ_i / Σσ``: its error is ``erank · |Σ_i (1 + ln q_i) δq_i|`` with
    ``δq_i ≲ δσ_i / Σσ``, i.e. of order 1e-11 relative when a few values sit near g·σ_1
    (MiniLM's attention: ≤ 1.2e-11; checked against the SVD to 1e-10); stable rank and k90
    depend on σ² and on the largest values, far less sensitive; every trusted value lies 1e5
    times above the rank threshold ``1e-10·r·max(σ_1, 1)``, so the rank is exact. A matrix with
    a smaller value (rank-deficient or nearly so: there the Gram cannot resolve the values,
    and the rank and the entropy's small terms depend on them) is redone by a dense SVD, so its
    values are the reference's own. ``n`` (broadcast against ``a[..., 0, 0]``): how many singular
    values each matrix can have at most (its own size when ``a`` is zero-padded: the padding's
    zeros are exact and do not call for the SVD).
    """
    a = a.to(torch.float64)
    s = gram_svdvals(a)
    if s.numel() == 0:
        return s
    if n is None:
        smallest = s[..., -1]
    else:
        k = torch.broadcast_to(n.to(device=s.device, dtype=torch.long), s.shape[:-1]).clamp(1, s.shape[-1]) - 1
        smallest = torch.gather(s, -1, k.unsqueeze(-1)).squeeze(-1)
    low = (smallest < GRAM_RESOLVED * s[..., 0]).reshape(-1)
    if bool(low.any()):
        flat = s.reshape(-1, s.shape[-1])
        flat[low] = torch.linalg.svdvals(a.reshape(-1, *a.shape[-2:])[low])
        s = flat.reshape(s.shape)
    return s


def gram_svdvals(x: torch.Tensor) -> torch.Tensor:
    """Singular values of ``x [..., t, n]`` as ``sqrt(eig(x xᵀ))`` (or of ``xᵀ x`` when ``n < t``),
    float64, descending: ``[..., min(t, n)]``. Values below ≈1e-8·σ_1 are not resolved (the Gram
    squares them), which changes an effective rank by less than ``t · 1e-8``; used for the
    hidden states ``X_ℓ [t, N]``, where only the effective rank is reported."""
    x = x.to(torch.float64)
    g = x @ x.mT if x.shape[-2] <= x.shape[-1] else x.mT @ x
    ev = torch.linalg.eigvalsh(g).clamp_min(0.0)
    return ev.flip(-1).sqrt()


def factored_svdvals(q: torch.Tensor, k: torch.Tensor, n: torch.Tensor | None = None) -> torch.Tensor:
    """Singular values of ``q kᵀ`` without forming it when ``t > d`` (as for the weights, bounds.md §2).

    ``q``, ``k``: ``[..., t, d]``. Returns ``[..., min(t, d)]`` in float64, descending; for
    ``t > d`` the other ``t − d`` values are exactly zero and not listed. ``n``: each pair's own
    number of rows when zero-padded (see :func:`spectrum`).

    ``t ≤ d``: :func:`spectrum` of ``q kᵀ``. ``t > d``: ``σ²(q kᵀ) = eig(Gq Gk)`` with the
    ``d × d`` Grams ``Gq = qᵀq``, ``Gk = kᵀk``; with the Cholesky factor ``Gq = L Lᵀ`` that is
    ``eig(Lᵀ Gk L)``, a symmetric ``d × d`` eigenproblem (no QR of the ``t × d`` factors). Its
    absolute error is ≈ ε·‖q‖²‖k‖² (Cholesky and the Grams are backward stable in that norm), i.e.
    ``ρ²`` times the plain Gram route's ε·σ₁² with ``ρ = ‖q‖‖k‖ / σ₁(q kᵀ)`` ≥ 1. So a pair is
    trusted when its smallest value satisfies ``λ_min ≥ GRAM_RESOLVED² · ‖Gq‖_F ‖Gk‖_F`` (which
    bounds ``GRAM_RESOLVED² ρ² σ₁²`` from above): the same relative accuracy as :func:`spectrum`'s
    test. Pairs that fail it, or whose ``Gq`` is not numerically positive definite (``q`` of rank
    below d), take the exact route: thin QR ``q = Q_a R_a``, ``k = Q_b R_b`` and :func:`spectrum` of
    the core ``R_a R_bᵀ`` (``σ(q kᵀ) = σ(R_a R_bᵀ)``).
    """
    q, k = q.to(torch.float64), k.to(torch.float64)
    t, d = q.shape[-2], q.shape[-1]
    if t <= d:
        return spectrum(q @ k.mT, n)
    gq, gk = q.mT @ q, k.mT @ k
    chol, info = torch.linalg.cholesky_ex(gq)
    ev = torch.linalg.eigvalsh(chol.mT @ gk @ chol).clamp_min(0.0).flip(-1)  # [..., d], descending
    if n is None:
        smallest = ev[..., -1]
    else:
        last = torch.broadcast_to(torch.clamp(n, max=d).to(device=ev.device, dtype=torch.long),
                                  ev.shape[:-1]).clamp(1, d) - 1
        smallest = torch.gather(ev, -1, last.unsqueeze(-1)).squeeze(-1)
    scale = torch.linalg.matrix_norm(gq) * torch.linalg.matrix_norm(gk)
    bad = ((info != 0) | (smallest < GRAM_RESOLVED**2 * scale)).reshape(-1)
    s = ev.sqrt()
    if bool(bad.any()):
        flat = s.reshape(-1, d)
        qb, kb = q.reshape(-1, t, d)[bad], k.reshape(-1, t, d)[bad]
        ra, rb = torch.linalg.qr(qb, mode="r").R, torch.linalg.qr(kb, mode="r").R
        nb = None if n is None else torch.broadcast_to(torch.clamp(n, max=d), ev.shape[:-1]).reshape(-1)[bad]
        flat[bad] = spectrum(ra @ rb.mT, nb)
        s = flat.reshape(s.shape)
    return s


def measures_of(s: torch.Tensor, r: int | torch.Tensor) -> dict[str, torch.Tensor]:
    """``erank``, ``stable_rank``, ``rank``, ``k90`` of every matrix whose singular values are the
    rows of ``s [..., k]`` (descending, float64; unlisted values are exact zeros); ``r`` =
    ``min(rows, cols)`` of the matrices (enters the rank threshold; an int, or a tensor broadcast
    against ``s[..., 0]``). Each value ``[...]``, float64.

    A matrix zero-padded with rows and columns has the singular values of the matrix plus zeros,
    and zeros change none of these measures (given the matrix's own ``r``); that is how a padded
    batch is measured in one call."""
    s = s.clamp_min(0.0)
    s1 = s[..., 0]
    total = s.sum(-1)
    q = s / torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(-1)
    ent = -torch.special.xlogy(q, q).sum(-1)
    erank = torch.where(total > 0, torch.exp(ent), torch.zeros_like(total))
    s2 = s * s
    fro2 = s2.sum(-1)
    stable = torch.where(s1 > 0, fro2 / torch.where(s1 > 0, s1 * s1, torch.ones_like(s1)), torch.zeros_like(s1))
    thresh = RANK_RTOL * r * torch.clamp_min(s1, 1.0)
    rank = (s > thresh.unsqueeze(-1)).sum(-1).to(torch.float64)
    cum = torch.cumsum(s2, -1)
    # k90 = the smallest k with Σ_{i≤k} σ_i² ≥ 0.9 Σ σ² (0 for the zero matrix)
    k90 = (cum < K90_SHARE * fro2.unsqueeze(-1)).sum(-1).to(torch.float64) + 1.0
    k90 = torch.where(fro2 > 0, torch.minimum(k90, torch.full_like(k90, s.shape[-1])), torch.zeros_like(k90))
    return {"erank": erank, "stable_rank": stable, "rank": rank, "k90": k90}


def entropies(p: torch.Tensor, row_len: torch.Tensor,
              n_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention entropy of ``p [..., t, t]`` (rows restricted to real tokens) (bounds.md §8).

    ``row_len [..., t]`` (broadcast against ``p``'s rows): how many keys row i may attend to (t
    for an encoder, i + 1 under a causal mask). Returns ``(entropy, norm_entropy)``, each
    ``[...]``: the mean over rows of ``H_i = −Σ_j P_ij ln P_ij`` (``0 ln 0 = 0``), and the mean
    over the rows with ``row_len ≥ 2`` of ``H_i / ln(row_len_i)`` (a row with one key has no
    choice to normalise; NaN when no row has two keys, e.g. a one-token sequence).
    ``n_rows`` (broadcast against ``[...]``): the number of real rows t when ``p`` is zero-padded
    (padded rows have entropy 0 and ``row_len`` 0); default: every row is real.
    """
    return entropies_of_rows(row_entropies(p), row_len, n_rows)


def row_entropies(p: torch.Tensor) -> torch.Tensor:
    """``H_i = −Σ_j P_ij ln P_ij`` of every row of ``p [..., t, t]`` (float64): ``[..., t]``."""
    return torch.special.entr(p.to(torch.float64)).sum(-1)


def entropies_of_rows(h: torch.Tensor, row_len: torch.Tensor,
                      n_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`entropies` from the row entropies ``h [..., t]`` (:func:`row_entropies`)."""
    entropy = h.mean(-1) if n_rows is None else h.sum(-1) / n_rows.to(h)
    n = torch.broadcast_to(row_len.to(device=h.device, dtype=torch.float64), h.shape)
    ok = n >= 2
    ratio = torch.where(ok, h / torch.where(ok, torch.log(n), torch.ones_like(n)), torch.zeros_like(h))
    count = ok.sum(-1)
    norm = torch.where(count > 0, ratio.sum(-1) / count.clamp_min(1), torch.full_like(entropy, float("nan")))
    return entropy, norm
