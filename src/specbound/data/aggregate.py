"""Aggregation over sequences (bounds.md §8): mean, standard deviation and a 95% bootstrap
interval of every per-sequence quantity, per (source, layer, head) and per (source, layer).

The interval is :func:`scipy.stats.bootstrap` (BCa by default, seeded with
``numpy.random.default_rng(seed)``) of the mean over sequences. All columns of one source are
bootstrapped in one call, on the same resamples of the sequences: the data handed to scipy are
the sequence indices ``0..n−1`` and the statistic is the column means of the resampled rows,
computed as ``(counts @ X) / n`` (the resample's multiplicities times the data matrix). That is
the plain bootstrap of the mean, column by column, at the cost of one matrix product.

Conventions: ``std`` is the sample standard deviation (``ddof = 1``); with one sequence ``std``
and the interval are NaN; a column whose values are all equal has the interval ``[v, v]`` (its
bootstrap distribution is a point; BCa is undefined there); NaN values (the normalised entropy of
a one-token sequence) are left out of that column's statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["CONFIDENCE", "N_RESAMPLES", "STATS", "aggregate", "bootstrap_means"]

CONFIDENCE = 0.95
#: default number of bootstrap resamples (scipy's own default is 9999; 2000 keeps the interval's
#: Monte Carlo error well below its width at a fifth of the cost)
N_RESAMPLES = 2000
STATS = ("mean", "std", "ci_low", "ci_high")


def _mean_statistic(x: np.ndarray):  # -> callable for scipy.stats.bootstrap
    n, c = x.shape

    def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        b = flat.shape[0]
        counts = np.bincount((flat + np.arange(b)[:, None] * n).ravel(), minlength=b * n).reshape(b, n)
        m = (counts @ x) / flat.shape[1]  # [b, c]
        return np.moveaxis(m.reshape(*idx.shape[:-1], c), -1, 0)  # [c, ...]

    return stat


def bootstrap_means(x: np.ndarray, *, seed: int, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                    method: str = "BCa") -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap intervals of the column means of ``x [n, c]`` (no NaN): ``(low [c], high [c])``.

    Constant columns get ``[v, v]``; ``n < 2`` gives NaN. Where BCa is undefined for a column
    (a bootstrap distribution without spread on one side) the percentile interval of the same
    resamples is used instead.
    """
    from scipy.stats import bootstrap

    x = np.asarray(x, dtype=np.float64)
    n, c = x.shape
    low, high = np.full(c, np.nan), np.full(c, np.nan)
    if n < 2 or c == 0:
        return low, high
    const = np.all(x == x[:1], axis=0)
    low[const] = high[const] = x[0, const]
    vary = np.flatnonzero(~const)
    if vary.size == 0:
        return low, high
    xs = x[:, vary]
    res = bootstrap((np.arange(n),), _mean_statistic(xs), vectorized=True, n_resamples=n_resamples,
                    confidence_level=confidence, method=method, rng=np.random.default_rng(seed), batch=500)
    lo, hi = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    if bad.any():
        dist = np.atleast_2d(res.bootstrap_distribution)  # [c, n_resamples]
        a = (1 - confidence) / 2
        lo[bad] = np.quantile(dist[bad], a, axis=-1)
        hi[bad] = np.quantile(dist[bad], 1 - a, axis=-1)
    low[vary], high[vary] = lo, hi
    return low, high


def aggregate(frame: pd.DataFrame, keys: Sequence[str], columns: Sequence[str], *, seed: int,
              n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per ``keys`` group of ``frame`` (which has a ``sequence`` column and, per source,
    one row per sequence and group): ``n_sequences`` and ``{column}_{mean,std,ci_low,ci_high}``.

    Groups of one ``source`` (when that column is present) are bootstrapped together on the same
    resamples of the sequences; ``seed`` seeds every source's bootstrap.
    """
    keys = list(keys)
    by_source = [("", frame)] if "source" not in frame.columns else list(frame.groupby("source", sort=False))
    group_keys = [k for k in keys if k != "source"]
    out = []
    for src, f in by_source:
        f = f.sort_values(["sequence", *group_keys], kind="stable")
        groups = f[group_keys].drop_duplicates().reset_index(drop=True)
        n_seq = f["sequence"].nunique()
        g = len(groups)
        vals = f[list(columns)].to_numpy(dtype=np.float64).reshape(n_seq, g, len(columns))
        flat = vals.reshape(n_seq, g * len(columns))
        mean = np.nanmean(flat, axis=0) if n_seq else np.full(flat.shape[1], np.nan)
        counts = np.sum(np.isfinite(flat), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            centred = np.where(np.isfinite(flat), flat - mean, 0.0)
            std = np.sqrt(np.sum(centred**2, axis=0) / (counts - 1))
        std[counts < 2] = np.nan
        full = np.isfinite(flat).all(axis=0)
        low, high = np.full(flat.shape[1], np.nan), np.full(flat.shape[1], np.nan)
        lo, hi = bootstrap_means(flat[:, full], seed=seed, n_resamples=n_resamples, confidence=confidence)
        low[full], high[full] = lo, hi
        for j in np.flatnonzero(~full):  # columns with NaN: their finite values alone
            col = flat[np.isfinite(flat[:, j]), j][:, None]
            if col.shape[0]:
                lo, hi = bootstrap_means(col, seed=seed, n_resamples=n_resamples, confidence=confidence)
                low[j], high[j] = lo[0], hi[0]
        table = groups.copy()
        if src != "":
            table.insert(0, "source", src)
        table["n_sequences"] = n_seq
        shaped = {s: a.reshape(g, len(columns)) for s, a in
                  (("mean", mean), ("std", std), ("ci_low", low), ("ci_high", high))}
        new = {f"{c}_{s}": shaped[s][:, i] for i, c in enumerate(columns) for s in STATS}
        out.append(pd.concat([table, pd.DataFrame(new)], axis=1))
    return pd.concat(out, ignore_index=True)
