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
    kendall_tau,
    score_measure,
    sign_error_rate,
)


def test_tau_without_ties_by_hand():
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant (2 vs 3) -> (5-1)/6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_tau_b_with_ties_by_hand():
    # x = (1,2,2,3), y = (1,2,3,3): 4 concordant pairs, 0 discordant, one pair tied in x
    # (items 1,2), one tied in y (items 2,3): tau_b = 4 / sqrt((6-1)(6-1)) = 0.8
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # a pair tied in both counts in n1 and n2: x = (1,1,2), y = (5,5,6): S = 2, n1 = n2 = 1
    assert kendall_tau([1, 1, 2], [5, 5, 6]) == pytest.approx(2 / math.sqrt(2 * 2))


def test_tau_undefined_and_missing_values():
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None
    assert kendall_tau([1], [2]) is None
    # NaN / None drop the model: same as the tau of the remaining three
    assert kendall_tau([1, 2, float("nan"), 3], [1, 3, 9, 2]) == pytest.approx(kendall_tau([1, 2, 3], [1, 3, 2]))
    assert kendall_tau([1, None, 2, 3], [1, 0, 3, 2]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1, 2, 3])


def _tau_brute(x, y):
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
    d = math.sqrt((n0 - n1) * (n0 - n2))
    return None if d == 0 else s / d


small = st.lists(st.integers(-3, 3), min_size=2, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_tau_matches_brute_force_and_invariants(data):
    x = data.draw(small)
    y = data.draw(st.lists(st.integers(-3, 3), min_size=len(x), max_size=len(x)))
    t = kendall_tau(x, y)
    ref = _tau_brute(x, y)
    if ref is None:
        assert t is None
        return
    assert t == pytest.approx(ref, abs=1e-12)
    assert -1 - 1e-12 <= t <= 1 + 1e-12
    assert kendall_tau(y, x) == pytest.approx(t)                      # symmetric
    assert kendall_tau(x, [-v for v in y]) == pytest.approx(-t)       # sign flip
    assert kendall_tau([math.exp(v) for v in x], y) == pytest.approx(t)  # strictly monotone map


# A 2 x 3 factorial table: axis a in {0, 1}, axis b in {0, 1, 2}.
HP = [{"a": a, "b": b} for a in (0, 1) for b in (0, 1, 2)]
GAP = [0.1, 0.2, 0.3, 0.2, 0.2, 0.5]
MEAS = [1.0, 3.0, 2.0, 2.0, 1.0, 3.0]


def test_granulated_tau_by_hand():
    # axis a (b fixed): groups b=0: m (1,2) g (.1,.2) -> +1; b=1: m (3,1) g (.2,.2): gap constant,
    # left out; b=2: m (2,3) g (.3,.5) -> +1.  psi_a = 1.
    # axis b (a fixed): a=0: m (1,3,2) g (.1,.2,.3): pairs (0,1)+ (0,2)+ (1,2)- -> 1/3;
    # a=1: m (2,1,3) g (.2,.2,.5): pairs (0,1) tied in g, (0,2)+, (1,2)+ -> S = 2,
    # n0 = 3, n1 = 0, n2 = 1 -> 2/sqrt(3*2).  psi_b = (1/3 + 2/sqrt(6)) / 2.
    psi, mean = granulated_tau(MEAS, GAP, HP, ["a", "b"])
    psi_b = (1 / 3 + 2 / math.sqrt(6)) / 2
    assert psi["a"] == pytest.approx(1.0)
    assert psi["b"] == pytest.approx(psi_b)
    assert mean == pytest.approx((1.0 + psi_b) / 2)


def test_granulated_tau_constant_measure_counts_as_zero():
    # the measure ignores axis b entirely (depends on a only): psi_b = 0, not left out
    meas = [1.0 if h["a"] == 0 else 2.0 for h in HP]
    psi, mean = granulated_tau(meas, GAP, HP, ["a", "b"])
    assert psi["b"] == 0.0
    assert psi["a"] == pytest.approx(1.0)  # b=0 and b=2 groups agree; b=1 left out (gap ties)
    assert mean == pytest.approx(0.5)


def test_granulated_tau_axis_without_information():
    gap = [0.3 if h["b"] == 0 else 0.1 for h in HP]  # the gap never changes along a
    psi, mean = granulated_tau(MEAS, gap, HP, ["a", "b"])
    assert psi["a"] is None
    assert mean == pytest.approx(psi["b"])


def test_coupled_pairs_and_sign_error_by_hand():
    pairs = coupled_pairs(HP, ["a", "b"])
    assert len(pairs) == 3 + 2 * 3  # 3 pairs along a, 3 along b for each a
    assert all(sum(HP[k][x] != HP[l][x] for x in "ab") == 1 for k, l, _ in pairs)
    # along a: b=0 agrees, b=1 gap tie (left out), b=2 agrees -> 0 errors in 2
    # along b, a=0: (0,1) agree, (0,2) agree, (1,2) m 3>2 but g .2<.3 -> error
    # along b, a=1: (0,1) gap tie (left out), (0,2) agree, (1,2) agree
    err, n = sign_error_rate(MEAS, GAP, HP, ["a", "b"])
    assert n == 7
    assert err == pytest.approx(1 / 7)
    # equal measures count as half an error
    err, n = sign_error_rate([1.0] * 6, GAP, HP, ["a", "b"])
    assert (err, n) == (pytest.approx(0.5), 7)


def test_score_measure_row():
    sc = score_measure("m", MEAS, GAP, HP, ["a", "b"])
    row = sc.to_row(["a", "b"])
    assert row["measure"] == "m" and row["n_models"] == 6 and row["n_coupled_pairs"] == 7
    assert row["kendall_tau"] == pytest.approx(kendall_tau(MEAS, GAP))
    assert row["granulated_tau_a"] == pytest.approx(1.0)
    assert set(row) == {"measure", "kendall_tau", "granulated_tau_a", "granulated_tau_b",
                        "granulated_tau_mean", "granulated_tau_mean_se", "sign_error_rate",
                        "sign_error_rate_se", "n_coupled_pairs", "n_models"}
    assert row["sign_error_rate_se"] == pytest.approx(math.sqrt((1 / 7) * (6 / 7) / 7))
    # group taus: axis a -> [1, 1] (one group left out), axis b -> [1/3, 2/sqrt(6)]
    tb = [1 / 3, 2 / math.sqrt(6)]
    se_b2 = np.var(tb, ddof=1) / 2
    assert row["granulated_tau_mean_se"] == pytest.approx(math.sqrt(0.0 + se_b2) / 2)


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
    assert sc.sign_error == 0.0
