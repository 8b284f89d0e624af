"""E3 scoring functions against hand-computed values, a brute-force τ, and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specbound.experiments.correlation.scores import (
    coupled_pairs,
    granulated_tau,
    granulated_tau_se,
    hoeffding_weight,
    kendall_tau,
    kendall_tau_b,
    n_constant_groups,
    robust_sign_error,
    score_measure,
    sign_error_unweighted,
)


def test_tau_without_ties_by_hand():
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant (2 vs 3) -> (5-1)/6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # no ties: a = b


def test_tau_a_and_tau_b_with_ties_by_hand():
    # x = (1,2,2,3), y = (1,2,3,3): 4 concordant pairs, 0 discordant, one pair tied in x
    # (items 1,2), one tied in y (items 2,3). tau_a = 4/6 (Jiang eq. 2: ties stay in the
    # denominator); tau_b = 4 / sqrt((6-1)(6-1)) = 0.8
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(4 / 6)
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # a pair tied in both: x = (1,1,2), y = (5,5,6): S = 2; tau_a = 2/3, tau_b = 2/sqrt(2*2)
    assert kendall_tau([1, 1, 2], [5, 5, 6]) == pytest.approx(2 / 3)
    assert kendall_tau_b([1, 1, 2], [5, 5, 6]) == pytest.approx(2 / math.sqrt(2 * 2))


def test_tau_undefined_and_missing_values():
    assert kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0  # tau-a of a constant measure: every pair 0
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None
    assert kendall_tau([1], [2]) is None
    # NaN / None drop the model: same as the tau of the remaining three
    assert kendall_tau([1, 2, float("nan"), 3], [1, 3, 9, 2]) == pytest.approx(kendall_tau([1, 2, 3], [1, 3, 2]))
    assert kendall_tau([1, None, 2, 3], [1, 0, 3, 2]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1, 2, 3])


def _tau_brute(x, y, variant="a"):
    n = len(x)
    s = n1 = n2 = 0
    for i in range(n):
        for j in range(i + 1, n):
            a = (x[i] > x[j]) - (x[i] < x[j])
            b = (y[i] > y[j]) - (y[i] < y[j])
            s += a * b
            n1 += a == 0
            n2 += b == 0
    n0 = n * (n - 1) // 2
    if variant == "a":
        return s / n0
    d = math.sqrt((n0 - n1) * (n0 - n2))
    return None if d == 0 else s / d


small = st.lists(st.integers(-3, 3), min_size=2, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_tau_matches_brute_force_and_invariants(data):
    x = data.draw(small)
    y = data.draw(st.lists(st.integers(-3, 3), min_size=len(x), max_size=len(x)))
    assert kendall_tau(x, y) == pytest.approx(_tau_brute(x, y, "a"), abs=1e-12)
    t = kendall_tau_b(x, y)
    ref = _tau_brute(x, y, "b")
    if ref is None:
        assert t is None
        return
    assert t == pytest.approx(ref, abs=1e-12)
    assert -1 - 1e-12 <= t <= 1 + 1e-12
    assert kendall_tau_b(y, x) == pytest.approx(t)                      # symmetric
    assert kendall_tau_b(x, [-v for v in y]) == pytest.approx(-t)       # sign flip
    assert kendall_tau_b([math.exp(v) for v in x], y) == pytest.approx(t)  # strictly monotone map
    assert abs(kendall_tau(x, y)) <= abs(t) + 1e-12                     # ties only shrink tau-a


# A 2 x 3 factorial table: axis a in {0, 1}, axis b in {0, 1, 2}.
HP = [{"a": a, "b": b} for a in (0, 1) for b in (0, 1, 2)]
GAP = [0.1, 0.2, 0.3, 0.2, 0.2, 0.5]
MEAS = [1.0, 3.0, 2.0, 2.0, 1.0, 3.0]


def test_tau_a_over_the_table_by_hand():
    # 15 pairs; + : (0,1) (0,2) (0,3) (0,5) (2,4) (2,5) (3,5) (4,5); - : (1,2); the other six are
    # tied in m or g -> S = 7. tau_a = 7/15; tau_b: 3 ties in m, 3 in g -> 7/sqrt(12*12)
    assert kendall_tau(MEAS, GAP) == pytest.approx(7 / 15)
    assert kendall_tau_b(MEAS, GAP) == pytest.approx(7 / 12)


def test_granulated_tau_by_hand():
    # axis a (b fixed): b=0: m (1,2) g (.1,.2) -> +1; b=1: m (3,1) g (.2,.2): gaps constant,
    # counted with tau 0; b=2: m (2,3) g (.3,.5) -> +1.  psi_a = 2/3.
    # axis b (a fixed): a=0: m (1,3,2) g (.1,.2,.3): pairs (0,1)+ (0,2)+ (1,2)- -> 1/3;
    # a=1: m (2,1,3) g (.2,.2,.5): (0,1) tied in g -> 0, (0,2)+, (1,2)+ -> tau_a = 2/3.
    # psi_b = 1/2; Psi = (2/3 + 1/2)/2 = 7/12
    psi, mean = granulated_tau(MEAS, GAP, HP, ["a", "b"])
    assert psi["a"] == pytest.approx(2 / 3)
    assert psi["b"] == pytest.approx(0.5)
    assert mean == pytest.approx(7 / 12)
    assert n_constant_groups(GAP, HP, ["a", "b"]) == {"a": 1, "b": 0}


def test_granulated_tau_constant_measure_counts_as_zero():
    # the measure ignores axis b entirely (depends on a only): psi_b = 0
    meas = [1.0 if h["a"] == 0 else 2.0 for h in HP]
    psi, mean = granulated_tau(meas, GAP, HP, ["a", "b"])
    assert psi["b"] == 0.0
    assert psi["a"] == pytest.approx(2 / 3)  # b=0 and b=2 groups agree; b=1 (gap ties) counts 0
    assert mean == pytest.approx(1 / 3)


def test_granulated_tau_axis_without_information_counts_zero():
    gap = [0.3 if h["b"] == 0 else 0.1 for h in HP]  # the gap never changes along a
    psi, mean = granulated_tau(MEAS, gap, HP, ["a", "b"])
    assert psi["a"] == 0.0  # every group constant: three groups at 0, counted
    assert n_constant_groups(gap, HP, ["a", "b"]) == {"a": 3, "b": 0}
    assert mean == pytest.approx(psi["b"] / 2)


def test_granulated_tau_groups_with_one_model_are_not_counted():
    meas = list(MEAS)
    meas[3] = float("nan")  # model (a=1, b=0) missing: axis a's group b=0 has one model left
    psi, _ = granulated_tau(meas, GAP, HP, ["a", "b"])
    assert psi["a"] == pytest.approx(0.5)  # groups b=1 (0) and b=2 (+1)
    # axis b, a=1: m (1,3) g (.2,.5) -> +1; a=0 as before 1/3
    assert psi["b"] == pytest.approx((1 / 3 + 1) / 2)


def test_coupled_pairs_and_unweighted_sign_error_by_hand():
    pairs = coupled_pairs(HP, ["a", "b"])
    assert len(pairs) == 3 + 2 * 3  # 3 pairs along a, 3 along b for each a
    assert all(sum(HP[k][x] != HP[l][x] for x in "ab") == 1 for k, l, _ in pairs)
    # along a: b=0 agrees, b=1 gap tie (left out), b=2 agrees -> 0 errors in 2
    # along b, a=0: (0,1) agree, (0,2) agree, (1,2) m 3>2 but g .2<.3 -> error
    # along b, a=1: (0,1) gap tie (left out), (0,2) agree, (1,2) agree
    err, n = sign_error_unweighted(MEAS, GAP, HP, ["a", "b"])
    assert n == 7
    assert err == pytest.approx(1 / 7)
    # equal measures count as half an error
    err, n = sign_error_unweighted([1.0] * 6, GAP, HP, ["a", "b"])
    assert (err, n) == (pytest.approx(0.5), 7)


def test_hoeffding_weight_by_hand():
    # (1 - 2 exp(-2 n (d/2)^2))_+^2; zero gap difference -> 0; the 1/2 cut at n = 4000 sits at
    # d = sqrt(2 ln(2 / (1 - 1/sqrt 2)) / n) = 0.03099
    assert hoeffding_weight(0.0, 4000) == 0.0
    assert hoeffding_weight(0.1, 4000) == pytest.approx((1 - 2 * math.exp(-20)) ** 2)
    assert hoeffding_weight(0.2, 100) == pytest.approx((1 - 2 * math.exp(-2)) ** 2)
    d_cut = math.sqrt(2 * math.log(2 / (1 - 1 / math.sqrt(2))) / 4000)
    assert hoeffding_weight(d_cut * 0.999, 4000) < 0.5 < hoeffding_weight(d_cut * 1.001, 4000)


def test_robust_sign_error_one_model_per_setting_by_hand():
    # environments = ordered coupled pairs. Along a: (0,3) d=.1 err 0; (1,4) d=0 -> weight 0, dropped;
    # (2,5) d=.2 err 0. Along b: (0,1) 0, (0,2) 0, (1,2) 1 (m 3>2, g .2<.3); (3,4) d=0 dropped;
    # (3,5) 0, (4,5) 0. Both orders: 14 kept (12 zeros, 2 ones), 4 dropped.
    r = robust_sign_error(MEAS, GAP, HP, ["a", "b"], n_test=4000)
    assert (r.n_environments, r.n_environments_dropped) == (14, 4)
    assert r.mean == pytest.approx(2 / 14)
    assert r.p90 == pytest.approx(0.7)  # numpy linear percentile: position 0.9*13 = 11.7 in 12 zeros, 2 ones
    assert r.max == 1.0
    assert r.max_per_axis == {"a": 0.0, "b": 1.0}
    # a tie in the measure is half an error (their sign_error: (1 - 0)/2)
    r = robust_sign_error([1.0] * 6, GAP, HP, ["a", "b"], n_test=4000)
    assert r.mean == r.max == 0.5
    # a small test set: every gap difference here is noise (d <= 0.3 < sqrt(2 ln(2/(1-1/sqrt2))/10))
    r = robust_sign_error(MEAS, GAP, HP, ["a", "b"], n_test=10)
    assert (r.mean, r.max, r.n_environments, r.n_environments_dropped) == (None, None, 0, 18)


def test_robust_sign_error_weights_pairs_within_an_environment():
    # two seeds of setting a=0 and one of a=1; n = 100. Pair (0,2): d = .2, signs agree (err 0);
    # pair (1,2): d = .4, m 2 < 3 but g .7 > .3 (err 1). Weights (w - 1/2)_+ with
    # w = (1 - 2 e^{-n d^2 / 2})^2: w02 = (1 - 2e^-2)^2 - .5, w12 = (1 - 2e^-8)^2 - .5.
    hp = [{"a": 0}, {"a": 0}, {"a": 1}]
    meas, gap = [1.0, 2.0, 3.0], [0.1, 0.7, 0.3]
    w02 = (1 - 2 * math.exp(-2)) ** 2 - 0.5
    w12 = (1 - 2 * math.exp(-8)) ** 2 - 0.5
    loss = w12 / (w02 + w12)
    ess = (w02 + w12) ** 2 / (w02 ** 2 + w12 ** 2)
    r = robust_sign_error(meas, gap, hp, ["a"], n_test=100)
    assert r.n_environments == 2 and r.mean == pytest.approx(loss) and r.max == pytest.approx(loss)
    assert 1 < ess < 2
    assert robust_sign_error(meas, gap, hp, ["a"], n_test=100, min_ess=ess).n_environments == 2
    r = robust_sign_error(meas, gap, hp, ["a"], n_test=100, min_ess=1.01 * ess)
    assert (r.n_environments, r.max) == (0, None)


def test_sample_size_adjustment():
    from specbound.experiments.correlation.measure import SQUARED_FAMILIES, adjusted_log10, sample_size_adjustment

    # squared measures: log10 sqrt(mu / n) = (log10 mu - log10 n) / 2; linear: log10 C - log10(n) / 2
    assert adjusted_log10("log_prod_spec", 4.0, 100) == pytest.approx(1.0)
    assert adjusted_log10("param_count", 4.0, 100) == pytest.approx(1.0)
    assert adjusted_log10("edelman", 4.0, 100) == pytest.approx(3.0)
    assert adjusted_log10("spectrum_adaptive", 4.0, 100) == pytest.approx(3.0)
    assert {"log_prod_spec", "sum_fro", "fro_over_spec", "param_count"} <= SQUARED_FAMILIES
    assert sample_size_adjustment("sum_fro") == "sqrt(mu/n)"
    assert sample_size_adjustment("bartlett_spectral") == "C/sqrt(n)"


def test_score_measure_row():
    sc = score_measure("m", MEAS, GAP, HP, ["a", "b"], n_test=4000)
    row = sc.to_row(["a", "b"])
    assert row["measure"] == "m" and row["n_models"] == 6 and row["n_coupled_pairs"] == 7
    assert row["kendall_tau"] == pytest.approx(7 / 15) and row["kendall_tau_b"] == pytest.approx(7 / 12)
    assert row["granulated_tau_a"] == pytest.approx(2 / 3)
    assert (row["n_constant_groups_a"], row["n_constant_groups_b"]) == (1, 0)
    assert set(row) == {"measure", "kendall_tau", "kendall_tau_b", "granulated_tau_a", "granulated_tau_b",
                        "granulated_tau_mean", "granulated_tau_mean_se", "n_constant_groups_a",
                        "n_constant_groups_b", "robust_sign_error_max", "robust_sign_error_p90",
                        "robust_sign_error_mean", "robust_sign_error_max_a", "robust_sign_error_max_b",
                        "n_environments", "sign_error_unweighted", "sign_error_unweighted_se",
                        "n_coupled_pairs", "n_models"}
    assert (row["robust_sign_error_max"], row["robust_sign_error_mean"]) == (1.0, pytest.approx(1 / 7))
    assert row["sign_error_unweighted_se"] == pytest.approx(math.sqrt((1 / 7) * (6 / 7) / 7))
    # group taus: axis a -> [1, 0, 1], axis b -> [1/3, 2/3]
    se2 = np.var([1, 0, 1], ddof=1) / 3 + np.var([1 / 3, 2 / 3], ddof=1) / 2
    assert row["granulated_tau_mean_se"] == pytest.approx(math.sqrt(se2) / 2)
    # without the test-set size, Dziugaite et al.'s columns are empty
    row = score_measure("m", MEAS, GAP, HP, ["a", "b"]).to_row(["a", "b"])
    assert row["robust_sign_error_max"] is None and row["n_environments"] == 0


def test_granulated_se_needs_two_groups_per_axis():
    hp = [{"a": a} for a in (0, 1)]
    assert granulated_tau_se([1.0, 2.0], [0.1, 0.2], hp, ["a"]) is None


def test_perfect_measure_scores_perfectly():
    rng = np.random.default_rng(0)
    hp = [{"a": a, "b": b, "c": c} for a in range(3) for b in range(2) for c in range(2)]
    gap = rng.random(len(hp))
    sc = score_measure("gap_itself", np.log(gap), gap, hp, ["a", "b", "c"])
    assert sc.kendall_tau == pytest.approx(1.0)
    assert sc.granulated_mean == pytest.approx(1.0)
    assert sc.sign_error_unweighted == 0.0
