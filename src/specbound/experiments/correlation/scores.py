"""Scores of a complexity measure as a predictor of the generalisation gap (experiment E3,
``shared/spec/experiments.md`` §E3), each exactly as the paper it is named after defines it.

Jiang, Neyshabur, Mobahi, Krishnan & Bengio (2020), "Fantastic generalization measures and
where to find them", §4–5:

* :func:`kendall_tau` — Jiang et al.'s eq. 2, Kendall's **τ-a**:
  ``τ = (1/(n(n−1))) Σ_{i≠j} sign(μ_i − μ_j)·sign(g_i − g_j) = (C − D)/(n(n−1)/2)``.
  A pair tied in either variable contributes 0 and stays in the denominator, so a constant
  measure (or a constant gap) has τ = 0. ``None`` only for fewer than two models.
  :func:`kendall_tau_b` (ties corrected, ``(C − D)/sqrt((n0 − n1)(n0 − n2))``) stands beside it
  under its own name; the two agree when there are no ties.
* :func:`granulated_tau` — Jiang et al.'s eqs. 3–4: for each hyper-parameter axis ``i`` the
  models are grouped by the values of all *other* axes, and ψ_i is the mean of τ-a over
  **every** group (a group whose gaps are all equal has τ = 0 and is counted; their number is
  reported as ``n_constant_groups_<axis>``); Ψ is the mean of ψ_i over the axes. A group left
  with fewer than two models (failed runs, missing values) has no τ and is not counted.

Dziugaite, Drouin, Neal, Rajkumar, Caballero, Wang, Mitliagkas & Roy (2020), "In search of
robust measures of generalization" (NeurIPS 2020), §3–4, as their code computes it
(nitarshan/robust-generalization-measures: ``coupled_network/common.py`` for the Hoeffding
weight and the pair's sign error, ``experiments/coupled_networks/create_environments.py`` for
the weighted accumulation per environment, ``experiments/coupled_networks/figure_cdf_all_measures.py``
for the per-environment normalisation, the effective-sample-size filter and the mean /
90th-percentile / max summaries). Implemented from their definitions, not copied:

* an **environment** is an ordered pair of hyper-parameter settings ``(h1, h2)`` that differ in
  exactly one axis; every model trained with ``h1`` is paired with every model trained with ``h2``
  (in this sweep one seed per setting, so one pair per environment);
* a pair's **weight** is ``w = (1 − 2·exp(−2·n·(|g1 − g2|/2)²))_+²`` (the Hoeffding confidence,
  squared as in their code, that the two gaps measured on ``n`` test samples really differ),
  then ``(w − 1/2)_+`` (pairs below confidence 1/2 are discarded): with ``n = 4000`` a gap
  difference under 0.031 (``sqrt(2·ln(2/(1 − 1/√2))/n)``) gets weight 0;
* a pair's **sign error** is ``(1 − sign(μ1 − μ2)·sign(g1 − g2))/2`` (a tie in the measure is 1/2);
* the **environment's loss** is the weighted mean of its pairs' sign errors; environments whose
  effective sample size ``(Σw)²/Σw²`` is below ``min_ess`` are dropped (their code's default is
  12, which needs many seeds per setting; with one seed per setting the ESS of any environment
  with positive weight is 1, so :data:`MIN_ESS` = 1: keep every environment with positive weight);
* over the kept environments (each unordered pair appears in both orders, as in their code):
  ``robust_sign_error_mean``, ``robust_sign_error_p90`` (``numpy.percentile``, linear) and
  ``robust_sign_error_max`` — the max is the paper's robust sign-error — plus the max per axis
  (``robust_sign_error_max_<axis>``) and ``n_environments`` (kept, ordered).

The plain unweighted mean over coupled pairs of the previous versions stays beside them as
:func:`sign_error_unweighted` (pairs with equal gaps left out, a tie in the measure half an error).

:func:`score_table` applies them to every measure column of ``models.csv``.

Every function takes plain sequences/columns; values that are missing (``NaN``/``None``) make
a model drop out of the computation for that measure (the number used is reported).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

__all__ = ["TARGETS", "MIN_ESS", "kendall_tau", "kendall_tau_b", "granulated_tau", "granulated_tau_se",
           "n_constant_groups", "sign_error_unweighted", "hoeffding_weight", "robust_sign_error", "coupled_pairs",
           "MeasureScore", "score_measure", "score_table"]

#: Minimum effective sample size of an environment (see the module docstring: 1 with one seed per setting).
MIN_ESS = 1.0


def _finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray([math.nan if v is None else v for v in x], dtype=float)
    ya = np.asarray([math.nan if v is None else v for v in y], dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"kendall_tau needs two 1-D sequences of equal length, got {xa.shape} and {ya.shape}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def _signs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int] | None:
    xa, ya = _finite_pairs(x, y)
    n = len(xa)
    if n < 2:
        return None
    i, j = np.triu_indices(n, k=1)
    return np.sign(xa[i] - xa[j]), np.sign(ya[i] - ya[j]), n


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-a of ``x`` and ``y`` (Jiang et al. 2020, eq. 2; module docstring); ``None``
    for fewer than two models. Pairs with a non-finite value in either sequence are left out."""
    s = _signs(x, y)
    if s is None:
        return None
    sx, sy, n = s
    return float(np.sum(sx * sy)) / (n * (n - 1) / 2)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b (ties corrected); ``None`` if either variable is constant or fewer than two
    models are given."""
    s = _signs(x, y)
    if s is None:
        return None
    sx, sy, n = s
    n0 = n * (n - 1) / 2
    denom = math.sqrt((n0 - float(np.sum(sx == 0))) * (n0 - float(np.sum(sy == 0))))
    return None if denom == 0 else float(np.sum(sx * sy)) / denom


def _groups(hparams: Sequence[Mapping[str, Any]], axis: str, axes: Sequence[str]) -> dict[tuple, list[int]]:
    others = [a for a in axes if a != axis]
    groups: dict[tuple, list[int]] = {}
    for k, hp in enumerate(hparams):
        groups.setdefault(tuple(hp[a] for a in others), []).append(k)
    return groups


def _axis_groups(m: np.ndarray, g: np.ndarray, hparams: Sequence[Mapping[str, Any]],
                 axes: Sequence[str]) -> dict[str, list[tuple[float, bool]]]:
    """Per axis, ``(τ-a, gaps constant)`` of every group of models that differ only along it
    and have at least two models with finite values (module docstring)."""
    out: dict[str, list[tuple[float, bool]]] = {}
    for axis in axes:
        taus = []
        for members in _groups(hparams, axis, axes).values():
            if len({hparams[k][axis] for k in members}) < 2:
                continue
            mm, gg = m[members], g[members]
            keep = np.isfinite(mm) & np.isfinite(gg)
            mm, gg = mm[keep], gg[keep]
            if len(gg) < 2:
                continue
            taus.append((float(kendall_tau(mm, gg)), bool(np.all(gg == gg[0]))))
        out[axis] = taus
    return out


def _as_array(v: Sequence[float]) -> np.ndarray:
    return np.asarray([math.nan if x is None else x for x in v], dtype=float)


def _check_lengths(name: str, measure: Sequence[float], gap: Sequence[float], hparams: Sequence[Any]) -> None:
    if not (len(measure) == len(gap) == len(hparams)):
        raise ValueError(f"{name}: measure, gap and hparams must have one entry per model")


def granulated_tau(measure: Sequence[float], gap: Sequence[float], hparams: Sequence[Mapping[str, Any]],
                   axes: Sequence[str]) -> tuple[dict[str, float | None], float | None]:
    """``({axis: ψ_axis or None}, Ψ or None)``: Jiang et al.'s granulated Kendall τ (eqs. 3–4;
    every group counted, a group with constant gaps contributes 0). ψ is ``None`` for an axis
    without any group of two models; Ψ is the mean over the other axes.

    ``hparams[k]`` holds model ``k``'s value of every axis in ``axes``."""
    _check_lengths("granulated_tau", measure, gap, hparams)
    per_axis = _axis_groups(_as_array(measure), _as_array(gap), hparams, axes)
    psi = {a: (float(np.mean([t for t, _ in v])) if v else None) for a, v in per_axis.items()}
    valid = [v for v in psi.values() if v is not None]
    return psi, (float(np.mean(valid)) if valid else None)


def n_constant_groups(gap: Sequence[float], hparams: Sequence[Mapping[str, Any]], axes: Sequence[str],
                      measure: Sequence[float] | None = None) -> dict[str, int]:
    """Per axis, the number of groups (of :func:`granulated_tau`) whose gaps are all equal (each
    counted with τ = 0)."""
    g = _as_array(gap)
    m = np.zeros_like(g) if measure is None else _as_array(measure)
    return {a: sum(c for _, c in v) for a, v in _axis_groups(m, g, hparams, axes).items()}


def granulated_tau_se(measure: Sequence[float], gap: Sequence[float], hparams: Sequence[Mapping[str, Any]],
                      axes: Sequence[str]) -> float | None:
    """An approximate standard error of Ψ: the groups of an axis are treated as independent
    draws (ψ_i's error is the standard deviation of its group τs over sqrt(#groups)) and the
    axes as independent (Ψ's error is sqrt(Σ se_i²) / #axes). ``None`` when an axis used by Ψ
    has a single group."""
    per_axis = [[t for t, _ in v] for v in _axis_groups(_as_array(measure), _as_array(gap), hparams, axes).values()
                if v]
    if not per_axis or any(len(t) < 2 for t in per_axis):
        return None
    var = sum(float(np.var(t, ddof=1)) / len(t) for t in per_axis)
    return math.sqrt(var) / len(per_axis)


def coupled_pairs(hparams: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> list[tuple[int, int, str]]:
    """Every pair ``(k, l, axis)`` of models whose hyper-parameters differ in exactly ``axis``."""
    pairs = []
    for axis in axes:
        for members in _groups(hparams, axis, axes).values():
            for k, l in combinations(members, 2):
                if hparams[k][axis] != hparams[l][axis]:
                    pairs.append((k, l, axis))
    return pairs


def sign_error_unweighted(measure: Sequence[float], gap: Sequence[float], hparams: Sequence[Mapping[str, Any]],
                          axes: Sequence[str]) -> tuple[float | None, int]:
    """``(plain mean sign error or None, number of pairs scored)`` over the coupled pairs: pairs
    with equal gaps are left out, a pair with equal measures counts as half an error. Not
    Dziugaite et al.'s score (that is :func:`robust_sign_error`)."""
    m, g = _as_array(measure), _as_array(gap)
    errors, count = 0.0, 0
    for k, l, _ in coupled_pairs(hparams, axes):
        if not (np.isfinite(m[k]) and np.isfinite(m[l]) and np.isfinite(g[k]) and np.isfinite(g[l])):
            continue
        dg = np.sign(g[k] - g[l])
        if dg == 0:
            continue
        dm = np.sign(m[k] - m[l])
        errors += 0.5 if dm == 0 else float(dm != dg)
        count += 1
    return (errors / count if count else None), count


def hoeffding_weight(delta_gap: float, n: int) -> float:
    """Dziugaite et al.'s pair weight before the 1/2 cut: ``(1 − 2·exp(−2n(|Δg|/2)²))_+²``, the
    (squared) Hoeffding confidence that two gaps measured on ``n`` samples differ."""
    x = abs(float(delta_gap)) / 2
    return max(0.0, 1.0 - 2.0 * math.exp(-2.0 * n * x * x)) ** 2


def _pair_weight(delta_gap: float, n: int) -> float:
    w = hoeffding_weight(delta_gap, n)
    return w - 0.5 if w > 0.5 else 0.0


@dataclass(frozen=True)
class RobustSignError:
    """Dziugaite et al.'s summaries over environments (module docstring); ``None`` where no
    environment is kept."""

    mean: float | None
    p90: float | None
    max: float | None
    max_per_axis: dict[str, float | None]
    n_environments: int
    n_environments_dropped: int


def robust_sign_error(measure: Sequence[float], gap: Sequence[float], hparams: Sequence[Mapping[str, Any]],
                      axes: Sequence[str], n_test: int, min_ess: float = MIN_ESS) -> RobustSignError:
    """Dziugaite et al.'s weighted sign error per environment and its summaries over
    environments (module docstring). ``n_test``: the number of test samples each gap was
    measured on. Several models with the same hyper-parameters (seeds) form one setting."""
    _check_lengths("robust_sign_error", measure, gap, hparams)
    if n_test < 1:
        raise ValueError(f"robust_sign_error: n_test must be positive, got {n_test}")
    m, g = _as_array(measure), _as_array(gap)
    ok = np.isfinite(m) & np.isfinite(g)
    settings: dict[tuple, list[int]] = {}
    for k, hp in enumerate(hparams):
        if ok[k]:
            settings.setdefault(tuple(hp[a] for a in axes), []).append(k)
    per_axis: dict[str, list[float]] = {a: [] for a in axes}
    dropped = 0
    keys = list(settings)
    for s1 in keys:
        for s2 in keys:
            diff = [i for i in range(len(axes)) if s1[i] != s2[i]]
            if len(diff) != 1:
                continue
            w_sum = w_sq = loss = 0.0
            for k in settings[s1]:
                for l in settings[s2]:
                    w = _pair_weight(g[k] - g[l], n_test)
                    err = (1.0 - float(np.sign(m[k] - m[l]) * np.sign(g[k] - g[l]))) / 2.0
                    w_sum += w
                    w_sq += w * w
                    loss += err * w
            ess = w_sum * w_sum / w_sq if w_sq > 0 else 0.0
            if w_sum > 0 and (ess > min_ess or math.isclose(ess, min_ess)):
                per_axis[axes[diff[0]]].append(loss / w_sum)
            else:
                dropped += 1
    every = [v for a in axes for v in per_axis[a]]
    if not every:
        return RobustSignError(None, None, None, {a: None for a in axes}, 0, dropped)
    arr = np.asarray(every)
    return RobustSignError(float(arr.mean()), float(np.percentile(arr, 90)), float(arr.max()),
                           {a: (max(v) if v else None) for a, v in per_axis.items()}, len(every), dropped)


@dataclass(frozen=True)
class MeasureScore:
    """One row of ``scores.csv``. ``granulated_se`` (:func:`granulated_tau_se`) and
    ``sign_error_unweighted_se`` (binomial, ``sqrt(e(1−e)/pairs)``) are approximate standard
    errors. ``robust`` is ``None`` when the test-set size is not known."""

    measure: str
    kendall_tau: float | None
    kendall_tau_b: float | None
    granulated: dict[str, float | None]
    granulated_mean: float | None
    n_constant_groups: dict[str, int]
    sign_error_unweighted: float | None
    n_pairs: int
    n_models: int
    granulated_se: float | None = None
    sign_error_unweighted_se: float | None = None
    robust: RobustSignError | None = None

    def to_row(self, axes: Sequence[str]) -> dict[str, Any]:
        row: dict[str, Any] = {"measure": self.measure, "kendall_tau": self.kendall_tau,
                               "kendall_tau_b": self.kendall_tau_b}
        for a in axes:
            row[f"granulated_tau_{a}"] = self.granulated.get(a)
        row.update(granulated_tau_mean=self.granulated_mean, granulated_tau_mean_se=self.granulated_se)
        for a in axes:
            row[f"n_constant_groups_{a}"] = self.n_constant_groups.get(a, 0)
        r = self.robust
        row.update(robust_sign_error_max=None if r is None else r.max,
                   robust_sign_error_p90=None if r is None else r.p90,
                   robust_sign_error_mean=None if r is None else r.mean)
        for a in axes:
            row[f"robust_sign_error_max_{a}"] = None if r is None else r.max_per_axis.get(a)
        row.update(n_environments=0 if r is None else r.n_environments,
                   sign_error_unweighted=self.sign_error_unweighted,
                   sign_error_unweighted_se=self.sign_error_unweighted_se,
                   n_coupled_pairs=self.n_pairs, n_models=self.n_models)
        return row


def score_measure(name: str, measure: Sequence[float], gap: Sequence[float],
                  hparams: Sequence[Mapping[str, Any]], axes: Sequence[str],
                  n_test: int | None = None, min_ess: float = MIN_ESS) -> MeasureScore:
    """Every score of one measure (Dziugaite et al.'s only when ``n_test`` is given)."""
    m, g = _as_array(measure), _as_array(gap)
    psi, psi_mean = granulated_tau(m, g, hparams, axes)
    err, n_pairs = sign_error_unweighted(m, g, hparams, axes)
    err_se = math.sqrt(err * (1 - err) / n_pairs) if err is not None else None
    robust = None if n_test is None else robust_sign_error(m, g, hparams, axes, n_test, min_ess)
    return MeasureScore(name, kendall_tau(m, g), kendall_tau_b(m, g), psi, psi_mean,
                        n_constant_groups(g, hparams, axes, m), err, n_pairs,
                        int(np.sum(np.isfinite(m) & np.isfinite(g))),
                        granulated_tau_se(m, g, hparams, axes), err_se, robust)


TARGETS = ("gap", "loss_gap")


def score_table(models: Any, axes: Sequence[str], targets: Sequence[str] = TARGETS,
                n_test: int | None = None, min_ess: float = MIN_ESS) -> Any:
    """``scores.csv``: per target gap and ``log10_*`` measure of ``models``, every score of this
    module (Dziugaite et al.'s with ``n_test`` test samples per gap, for the accuracy gap only:
    their Hoeffding weight needs a bounded [0, 1] loss, so the ``loss_gap`` rows leave those
    columns empty); within a target the
    measures are ranked by granulated τ mean, then τ-a (a measure without a granulated τ comes
    last)."""
    import pandas as pd

    hparams = models[list(axes)].to_dict("records") if axes else [{} for _ in range(len(models))]
    tables = []
    for target in targets:
        rows = []
        for col in (c for c in models.columns if c.startswith("log10_")):
            sc = score_measure(col[len("log10_"):], models[col].tolist(), models[target].tolist(), hparams, axes,
                               n_test=n_test if target == "gap" else None, min_ess=min_ess)
            rows.append({"target": target, **sc.to_row(axes)})
        table = pd.DataFrame(rows)
        if len(table):
            table = table.sort_values(["granulated_tau_mean", "kendall_tau"], ascending=False,
                                      na_position="last", kind="mergesort").reset_index(drop=True)
            table.insert(1, "rank", range(1, len(table) + 1))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
