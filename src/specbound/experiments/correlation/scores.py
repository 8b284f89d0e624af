"""Scores of a complexity measure as a predictor of the generalisation gap (experiment E3).

Following Jiang, Neyshabur, Mobahi, Krishnan & Bengio (2020), "Fantastic generalization
measures and where to find them", §4–5, and the coupled-pair sign error of Dziugaite et al.
(2020), "In search of robust measures of generalization":

* :func:`kendall_tau` — Kendall's rank correlation between a measure and the gap over a set
  of models, in its **τ-b** form (ties in either variable are allowed and corrected for):
  ``τ_b = (C − D) / sqrt((n0 − n1)(n0 − n2))`` with ``C``/``D`` the concordant/discordant
  pairs, ``n0 = n(n−1)/2``, ``n1``/``n2`` the pairs tied in the measure/the gap. Without
  ties it equals Jiang's ``τ = (C − D) / n0``. It is undefined (``None``) when either
  variable is constant or fewer than two models are given.
* :func:`granulated_tau` — for each hyper-parameter axis ``i``, the models are grouped by the
  values of all *other* axes; τ is computed inside every group in which axis ``i`` takes at
  least two values, and ψ_i is the mean over those groups (Jiang et al. eq. 4). A group in
  which the gap does not vary is left out (it carries no information about any measure); in a
  group where the gap varies but the measure is constant, τ counts as 0 (the measure predicts
  nothing there — leaving the group out would reward measures blind to an axis). Ψ is the
  mean of ψ_i over the axes that have at least one group (the same axes for every measure).
* :func:`sign_error_rate` — over *coupled pairs* (two models whose hyper-parameters differ in
  exactly one axis), the fraction of pairs in which the measure orders the two models against
  their gaps: pairs with equal gaps carry no sign and are left out; a pair with equal measures
  counts as half an error (a coin flip).

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

__all__ = ["TARGETS", "kendall_tau", "granulated_tau", "granulated_tau_se", "sign_error_rate", "coupled_pairs",
           "MeasureScore", "score_measure", "score_table"]


def _finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray([math.nan if v is None else v for v in x], dtype=float)
    ya = np.asarray([math.nan if v is None else v for v in y], dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"kendall_tau needs two 1-D sequences of equal length, got {xa.shape} and {ya.shape}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b of ``x`` and ``y`` (see the module docstring); ``None`` if undefined.

    Pairs with a non-finite value in either sequence are left out."""
    xa, ya = _finite_pairs(x, y)
    n = len(xa)
    if n < 2:
        return None
    i, j = np.triu_indices(n, k=1)
    sx = np.sign(xa[i] - xa[j])
    sy = np.sign(ya[i] - ya[j])
    n0 = n * (n - 1) / 2
    n1 = float(np.sum(sx == 0))
    n2 = float(np.sum(sy == 0))
    denom = math.sqrt((n0 - n1) * (n0 - n2))
    if denom == 0:
        return None
    return float(np.sum(sx * sy)) / denom


def _groups(hparams: Sequence[Mapping[str, Any]], axis: str, axes: Sequence[str]) -> dict[tuple, list[int]]:
    others = [a for a in axes if a != axis]
    groups: dict[tuple, list[int]] = {}
    for k, hp in enumerate(hparams):
        groups.setdefault(tuple(hp[a] for a in others), []).append(k)
    return groups


def _axis_taus(m: np.ndarray, g: np.ndarray, hparams: Sequence[Mapping[str, Any]],
               axes: Sequence[str]) -> dict[str, list[float]]:
    """Per axis, the τ of every group of models that differ only along it (see the module
    docstring for the groups that are left out or count as 0)."""
    out: dict[str, list[float]] = {}
    for axis in axes:
        taus = []
        for members in _groups(hparams, axis, axes).values():
            if len({hparams[k][axis] for k in members}) < 2:
                continue
            mm, gg = m[members], g[members]
            keep = np.isfinite(mm) & np.isfinite(gg)
            mm, gg = mm[keep], gg[keep]
            if len(gg) < 2 or np.all(gg == gg[0]):
                continue  # the gap does not vary: the group says nothing about any measure
            t = kendall_tau(mm, gg)
            taus.append(0.0 if t is None else t)  # a constant measure predicts nothing: τ = 0
        out[axis] = taus
    return out


def _as_array(v: Sequence[float]) -> np.ndarray:
    return np.asarray([math.nan if x is None else x for x in v], dtype=float)


def granulated_tau(measure: Sequence[float], gap: Sequence[float], hparams: Sequence[Mapping[str, Any]],
                   axes: Sequence[str]) -> tuple[dict[str, float | None], float | None]:
    """``({axis: ψ_axis or None}, Ψ or None)``: Jiang et al.'s granulated Kendall τ.

    ``hparams[k]`` holds model ``k``'s value of every axis in ``axes``."""
    if not (len(measure) == len(gap) == len(hparams)):
        raise ValueError("granulated_tau: measure, gap and hparams must have one entry per model")
    per_axis = _axis_taus(_as_array(measure), _as_array(gap), hparams, axes)
    psi = {a: (float(np.mean(t)) if t else None) for a, t in per_axis.items()}
    valid = [v for v in psi.values() if v is not None]
    return psi, (float(np.mean(valid)) if valid else None)


def granulated_tau_se(measure: Sequence[float], gap: Sequence[float], hparams: Sequence[Mapping[str, Any]],
                      axes: Sequence[str]) -> float | None:
    """An approximate standard error of Ψ: the groups of an axis are treated as independent
    draws (ψ_i's error is the standard deviation of its group τs over sqrt(#groups)) and the
    axes as independent (Ψ's error is sqrt(Σ se_i²) / #axes). ``None`` when an axis used by Ψ
    has a single group."""
    per_axis = [t for t in _axis_taus(_as_array(measure), _as_array(gap), hparams, axes).values() if t]
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


def sign_error_rate(measure: Sequence[float], gap: Sequence[float], hparams: Sequence[Mapping[str, Any]],
                    axes: Sequence[str]) -> tuple[float | None, int]:
    """``(error rate or None, number of pairs scored)`` over the coupled pairs (module docstring)."""
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


@dataclass(frozen=True)
class MeasureScore:
    """One row of ``scores.csv``. ``granulated_se`` (:func:`granulated_tau_se`) and
    ``sign_error_se`` (binomial, ``sqrt(e(1−e)/pairs)``) are approximate standard errors."""

    measure: str
    kendall_tau: float | None
    granulated: dict[str, float | None]
    granulated_mean: float | None
    sign_error: float | None
    n_pairs: int
    n_models: int
    granulated_se: float | None = None
    sign_error_se: float | None = None

    def to_row(self, axes: Sequence[str]) -> dict[str, Any]:
        row: dict[str, Any] = {"measure": self.measure, "kendall_tau": self.kendall_tau}
        for a in axes:
            row[f"granulated_tau_{a}"] = self.granulated.get(a)
        row.update(granulated_tau_mean=self.granulated_mean, granulated_tau_mean_se=self.granulated_se,
                   sign_error_rate=self.sign_error, sign_error_rate_se=self.sign_error_se,
                   n_coupled_pairs=self.n_pairs, n_models=self.n_models)
        return row


def score_measure(name: str, measure: Sequence[float], gap: Sequence[float],
                  hparams: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> MeasureScore:
    """All three scores of one measure."""
    m, g = _as_array(measure), _as_array(gap)
    psi, psi_mean = granulated_tau(m, g, hparams, axes)
    err, n_pairs = sign_error_rate(m, g, hparams, axes)
    err_se = math.sqrt(err * (1 - err) / n_pairs) if err is not None else None
    return MeasureScore(name, kendall_tau(m, g), psi, psi_mean, err, n_pairs,
                        int(np.sum(np.isfinite(m) & np.isfinite(g))),
                        granulated_tau_se(m, g, hparams, axes), err_se)


TARGETS = ("gap", "loss_gap")


def score_table(models: Any, axes: Sequence[str], targets: Sequence[str] = TARGETS) -> Any:
    """``scores.csv``: per target gap and ``log10_*`` measure of ``models``, the three scores of
    this module; within a target the measures are ranked
    by granulated τ mean, then τ (a measure without a granulated τ comes last)."""
    import pandas as pd

    hparams = models[list(axes)].to_dict("records") if axes else [{} for _ in range(len(models))]
    tables = []
    for target in targets:
        rows = []
        for col in (c for c in models.columns if c.startswith("log10_")):
            sc = score_measure(col[len("log10_"):], models[col].tolist(), models[target].tolist(), hparams, axes)
            rows.append({"target": target, **sc.to_row(axes)})
        table = pd.DataFrame(rows)
        if len(table):
            table = table.sort_values(["granulated_tau_mean", "kendall_tau"], ascending=False,
                                      na_position="last", kind="mergesort").reset_index(drop=True)
            table.insert(1, "rank", range(1, len(table) + 1))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
