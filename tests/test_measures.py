"""Per-matrix measures: hand values, orthogonal invariance, homogeneity, p-monotonicity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specbound import measures


def _sv(A: np.ndarray) -> np.ndarray:
    return np.linalg.svd(A, compute_uv=False)


def test_hand_values():
    s = np.array([3.0, 4.0 / 3.0, 0.0])  # diag(3, 4/3, 0)
    assert measures.spectral_norm(s) == 3.0
    assert measures.frobenius(s) == pytest.approx(math.sqrt(9 + 16 / 9))
    assert measures.nuclear(s) == pytest.approx(3 + 4 / 3)
    assert measures.schatten(s, 2) == pytest.approx(9 + 16 / 9)
    assert measures.schatten(s, 0.5) == pytest.approx(math.sqrt(3) + math.sqrt(4 / 3))
    assert measures.schatten(s, 0, r=3) == 2.0
    assert measures.numerical_rank(s, 3) == 2
    assert measures.stable_rank(s) == pytest.approx((9 + 16 / 9) / 9)
    q = np.array([3.0, 4 / 3]) / (3 + 4 / 3)
    assert measures.effective_rank(s) == pytest.approx(math.exp(-(q * np.log(q)).sum()))
    assert measures.log_schatten(s, 1.0) == pytest.approx(math.log(3 + 4 / 3))


def test_rank_threshold_is_relative_with_floor():
    # 1e-10 · r · max(σ1, 1): for σ1 < 1 the floor is absolute
    assert measures.numerical_rank(np.array([1e-3, 1e-9]), 2) == 2
    assert measures.numerical_rank(np.array([1e-3, 1e-11]), 2) == 1
    assert measures.numerical_rank(np.array([1e6, 1e-3]), 2) == 2  # threshold 2e-4 < 1e-3: kept
    assert measures.numerical_rank(np.array([1e8, 1e-3]), 2) == 1  # threshold 2e-2 > 1e-3


def test_zero_matrix_conventions():
    s = np.zeros(4)
    assert measures.numerical_rank(s, 4) == 0
    assert measures.stable_rank(s) == 0.0
    assert measures.effective_rank(s) == 0.0
    assert measures.log_schatten(s, 1.0) == -math.inf


def test_flat_spectrum_effective_rank_is_rank():
    assert measures.effective_rank(np.ones(7) * 2.5) == pytest.approx(7.0)
    assert measures.stable_rank(np.ones(7) * 2.5) == pytest.approx(7.0)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(2, 12), n=st.integers(2, 12), seed=st.integers(0, 9999), c=st.floats(0.1, 10.0))
def test_orthogonal_invariance_and_homogeneity(m, n, seed, c):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s, s_rot, s_c = _sv(A), _sv(U @ A @ V.T), _sv(c * A)
    r = min(m, n)
    for f in (measures.spectral_norm, measures.frobenius, measures.nuclear, measures.stable_rank, measures.effective_rank):
        assert f(s_rot) == pytest.approx(f(s), rel=1e-9)
    for p in (0.25, 1.0, 2.0):
        assert measures.schatten(s_rot, p) == pytest.approx(measures.schatten(s, p), rel=1e-9)
        assert measures.schatten(s_c, p) == pytest.approx(c**p * measures.schatten(s, p), rel=1e-9)
    assert measures.nuclear(s_c) == pytest.approx(c * measures.nuclear(s), rel=1e-9)
    assert measures.stable_rank(s_c) == pytest.approx(measures.stable_rank(s), rel=1e-9)  # scale-free
    assert measures.numerical_rank(s_rot, r) == measures.numerical_rank(s, r)
    # the Frobenius norm is the entrywise 2-norm: a brute-force check
    assert measures.frobenius(s) == pytest.approx(float(np.sqrt((A * A).sum())), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 9999), k=st.integers(1, 10))
def test_schatten_norm_is_nonincreasing_in_p(seed, k):
    s = np.sort(np.random.default_rng(seed).uniform(0.01, 5, k))[::-1]
    ps = [0.1, 0.3, 0.5, 1.0, 1.5, 2.0]
    norms = [measures.schatten(s, p) ** (1 / p) for p in ps]
    assert all(a >= b * (1 - 1e-12) for a, b in zip(norms, norms[1:]))
    # and 1 ≤ effective rank ≤ rank, stable rank ≤ rank
    assert 1 - 1e-12 <= measures.effective_rank(s) <= k + 1e-9
    assert measures.stable_rank(s) <= k + 1e-9


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 40), zeros=st.integers(0, 3), seed=st.integers(0, 9999), scale=st.floats(1e-30, 1e30))
def test_log_schatten_grid_is_log_schatten_per_p(k, zeros, seed, scale):
    """The vectorised grid gives log_schatten's value at every p, for spectra far from 1 in scale."""
    rng = np.random.default_rng(seed)
    s = np.concatenate([np.sort(rng.exponential(size=k))[::-1] * scale, np.zeros(zeros)])
    ps = np.arange(1, 41) / 20.0
    got = measures.log_schatten_grid(s, ps)
    want = np.array([measures.log_schatten(s, float(p)) for p in ps])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    assert np.all(measures.log_schatten_grid(np.zeros(3), ps) == -math.inf)
    with pytest.raises(ValueError):
        measures.log_schatten_grid(s, np.array([0.0, 1.0]))


# ---------------------------------------------------------------- the MatrixTable


def _table(tw, l_phi=1.13, ref=None):
    from specbound.measures import MatrixTable
    from specbound.spectra.compute import compute_spectra

    ms = compute_spectra(tw)
    return MatrixTable.build(ms, l_phi=l_phi, reference=None if ref is None else compute_spectra(tw, reference=ref))


def test_matrix_table_against_formed_matrices():
    from builders import formed, make_model

    from specbound.measures import KEY, TABLE_COLUMNS

    tw = make_model(L=2, H=4, Hkv=2, seed=4)
    t = _table(tw)
    f = t.frame
    assert list(f.columns) == TABLE_COLUMNS and len(t) == 2 * (4 + 4 + 2)
    assert not f.duplicated(KEY).any()
    mats = formed(tw)
    for row in f.itertuples():
        A = mats[row.layer][row.kind][max(row.head, 0)]
        s = _sv(A)
        assert (row.rows, row.cols, row.r) == (*A.shape, min(A.shape))
        assert row.rank == np.linalg.matrix_rank(A)
        assert row.spectral_norm == pytest.approx(s[0], rel=1e-10)
        assert row.frobenius == pytest.approx(np.linalg.norm(A), rel=1e-10)
        assert row.nuclear == pytest.approx(s.sum(), rel=1e-10)
        assert row.norm_21 == pytest.approx(np.linalg.norm(A, axis=0).sum(), rel=1e-10)
        assert row.ln_spec == pytest.approx(math.log(s[0]), rel=1e-10)
        assert row.ln_fro2 == pytest.approx(math.log((A * A).sum()), rel=1e-10)
        assert row.ln_21 == pytest.approx(math.log(np.linalg.norm(A, axis=0).sum()), rel=1e-10)
        assert (row.ln_d_spec, row.ln_d_fro2, row.ln_d_21) == (row.ln_spec, row.ln_fro2, row.ln_21)
        lw = mats[row.layer]["lw"]
        if row.kind == "QK":
            l11 = float(lw.W_Q[row.head].abs().sum() * lw.W_K[row.head // 2].abs().sum())
        elif row.kind == "OV":
            l11 = float(lw.W_V[row.head // 2].abs().sum() * lw.W_O[row.head].abs().sum())
        else:
            l11 = float(np.abs(A).sum())
        assert row.ln_l11 == pytest.approx(math.log(l11), rel=1e-12)
    assert t.values("ln_spec", "QK").shape == (2, 4) and t.values("ln_spec", "M_in").shape == (2,)


def test_matrix_table_alpha_and_gamma_by_hand():
    """α[ℓ] = Π_{k>ℓ} L_φ C2(M_in) C2(M_out) Σ_h C2(OV)(1 + 4 C2(QK)); γ*: 2 C2(OV) C2(M_out) C2(M_in),
    C2(M_out) C2(M_in), C2(M_out), 1 — from the formed matrices."""
    from builders import formed, make_model

    tw = make_model(L=3, H=2, Hkv=2, seed=8, scale=0.7)
    t = _table(tw, l_phi=1.1)
    c2 = [{k: [_sv(A)[0] for A in d[k]] for k in ("QK", "OV", "M_in", "M_out")} for d in formed(tw)]
    factor = [1.1 * c["M_in"][0] * c["M_out"][0] * sum(o * (1 + 4 * q) for q, o in zip(c["QK"], c["OV"])) for c in c2]
    alpha = [math.prod(factor[k] for k in range(ell + 1, 3)) for ell in range(3)]
    f = t.frame
    for row in f.itertuples():
        c = c2[row.layer]
        gamma = {"QK": 2 * c["OV"][max(row.head, 0)] * c["M_out"][0] * c["M_in"][0],
                 "OV": c["M_out"][0] * c["M_in"][0], "M_in": c["M_out"][0], "M_out": 1.0}[row.kind]
        assert math.exp(row.ln_alpha) == pytest.approx(alpha[row.layer], rel=1e-10)
        assert math.exp(row.ln_gamma) == pytest.approx(gamma, rel=1e-10)


def test_matrix_table_distances_to_a_reference():
    from builders import formed, make_model

    tw, tw0 = make_model(seed=1), make_model(seed=2)
    t = _table(tw, ref=tw0)
    assert t.reference
    m, m0 = formed(tw), formed(tw0)
    for row in t.frame.itertuples():
        D = m[row.layer][row.kind][max(row.head, 0)] - m0[row.layer][row.kind][max(row.head, 0)]
        assert row.ln_d_spec == pytest.approx(math.log(_sv(D)[0]), rel=1e-9)
        assert row.ln_d_fro2 == pytest.approx(math.log((D * D).sum()), rel=1e-9)
        assert row.ln_d_21 == pytest.approx(math.log(np.linalg.norm(D, axis=0).sum()), rel=1e-9)
