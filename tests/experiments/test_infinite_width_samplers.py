"""E4 samplers: the exact fast sampler against explicit weights, Bartlett's Wishart moments, the
limit sampler's scores and variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from specbound.experiments.infinite_width.samplers import (
    ModelSpec,
    bartlett_factor,
    fast_conditional_variance,
    fast_sample,
    limit_conditional_variance,
    limit_sample,
    limit_scores,
    naive_sample,
    sigma2_infinity,
    token_sigma,
)

DRAWS = 20_000
ACCEPT = 1e-3  # fixed seeds: a correct sampler passes with p well above this
SPECS = {
    "identity-n4": ModelSpec(n=4, H=2),
    "identity-n16": ModelSpec(n=16, H=2),
    "relu-n4": ModelSpec(n=4, H=2, token_map="relu"),
    "relu-n16": ModelSpec(n=16, H=2, token_map="relu"),
    "lowrank-n8-m4": ModelSpec(n=8, H=2, head_width=4),
}


@pytest.fixture(scope="module")
def naive():
    return {name: naive_sample(spec, DRAWS, np.random.default_rng(100 + i)) for i, (name, spec) in
            enumerate(SPECS.items())}


@pytest.mark.parametrize("name", list(SPECS))
def test_fast_sampler_agrees_with_explicit_weights(naive, name):
    spec = SPECS[name]
    y_naive, v_naive = naive[name]
    rng = np.random.default_rng(7)
    for scores in ("row", "bartlett"):
        v_fast = fast_conditional_variance(spec, DRAWS, rng, scores=scores)
        assert stats.ks_2samp(v_naive, v_fast).pvalue > ACCEPT, scores
    y_fast, _ = fast_sample(spec, DRAWS, rng)
    assert stats.ks_2samp(y_naive, y_fast).pvalue > ACCEPT


@pytest.mark.parametrize("name", ["identity-n4", "identity-n16", "relu-n4", "lowrank-n8-m4"])
def test_a_wrong_sampler_is_rejected(naive, name):
    spec = SPECS[name]
    _, v_naive = naive[name]
    rng = np.random.default_rng(8)
    # a factor-2 error in the width, and the limit itself: both must be told apart at n <= 16
    wrong = ModelSpec(n=2 * spec.n, H=spec.H, token_map=spec.token_map,
                      head_width=None if spec.head_width is None else 2 * spec.head_width)
    assert stats.ks_2samp(v_naive, fast_conditional_variance(wrong, DRAWS, rng)).pvalue < 1e-8
    lim = limit_conditional_variance(token_sigma(spec.token_map), spec.H, DRAWS, rng)
    assert stats.ks_2samp(v_naive, lim).pvalue < 1e-8


@pytest.mark.parametrize("name", ["identity-n4", "relu-n16"])
def test_naive_output_is_gaussian_given_its_conditional_variance(naive, name):
    y, v = naive[name]
    assert stats.kstest(y / np.sqrt(v), "norm").pvalue > ACCEPT


def test_nested_heads_have_the_law_of_separate_draws():
    rng = np.random.default_rng(9)
    m = 10_000
    nested = fast_conditional_variance(ModelSpec(n=16, H=8), m, rng, heads=[1, 2, 8])
    assert nested.shape == (3, m)
    for row, h in zip(nested, (1, 2, 8)):
        assert stats.ks_2samp(row, fast_conditional_variance(ModelSpec(n=16, H=h), m, rng)).pvalue > ACCEPT
    lim = limit_conditional_variance(np.eye(4), 4, m, rng, heads=[1, 4])
    assert stats.ks_2samp(lim[1], limit_conditional_variance(np.eye(4), 4, m, rng)).pvalue > ACCEPT


def test_bartlett_wishart_moments():
    dof, s, m = 7, 4, 50_000
    t = bartlett_factor(dof, s, m, np.random.default_rng(10))
    w = t @ np.swapaxes(t, 1, 2)
    mean, var = w.mean(0), w.var(0)
    se_mean = np.sqrt(dof * (1 + np.eye(s)) / m)
    assert np.all(np.abs(mean - dof * np.eye(s)) < 5 * se_mean)
    # Var(W_ij) = dof (1 + delta_ij) for Sigma = I
    assert np.allclose(var, dof * (1 + np.eye(s)), rtol=0.05)
    logdet = np.linalg.slogdet(w)[1]
    exact = sum(special.digamma((dof - i) / 2) for i in range(s)) + s * math.log(2)
    assert abs(logdet.mean() - exact) < 5 * logdet.std() / math.sqrt(m)
    assert np.allclose(np.triu(t[0], 1), 0.0)
    with pytest.raises(ValueError, match="degrees of freedom"):
        bartlett_factor(3, 4, 1, np.random.default_rng(0))


@pytest.mark.parametrize("token_map", ["identity", "relu"])
def test_limit_scores_have_kronecker_covariance(token_map):
    sig = token_sigma(token_map)
    p = limit_scores(sig, 50_000, np.random.default_rng(11)).reshape(50_000, -1)
    cov = np.cov(p, rowvar=False)
    assert np.allclose(cov, np.kron(sig, sig), atol=0.03)
    if token_map == "identity":  # iid N(0, 1)
        assert np.allclose(cov, np.eye(16), atol=0.03) and abs(p.mean()) < 0.01


def test_relu_sigma_is_the_relu_kernel():
    x = np.maximum(np.random.default_rng(12).standard_normal((4, 200_000)), 0.0)
    assert np.allclose(x @ x.T / x.shape[1], token_sigma("relu"), atol=6e-3)


@pytest.mark.parametrize("token_map", ["identity", "relu"])
def test_sigma2_inf_quadrature_and_limit_variance(token_map):
    sig = token_sigma(token_map)
    s2 = sigma2_infinity(sig)
    assert abs(s2 - sigma2_infinity(sig, order=24)) < 1e-9
    rng = np.random.default_rng(13)
    v1 = limit_conditional_variance(sig, 1, 50_000, rng)
    assert abs(v1.mean() - s2) < 4 * v1.std() / math.sqrt(v1.size)
    v64 = limit_conditional_variance(sig, 64, 5_000, rng)
    assert abs(v64.mean() - s2) < 4 * v64.std() / math.sqrt(v64.size)
    # as H grows v concentrates at sigma2_inf, i.e. y -> N(0, sigma2_inf): Var(v) ~ 1/H
    assert v64.var() == pytest.approx(v1.var() / 64, rel=0.15)
    if token_map == "identity":  # s E[softmax_1(p)^2], p ~ N(0, I_4), by Monte Carlo
        a = np.exp(rng.standard_normal((100_000, 4)))
        a /= a.sum(1, keepdims=True)
        mc = 4 * a[:, 0] ** 2
        assert abs(mc.mean() - s2) < 4 * mc.std() / math.sqrt(mc.size)


def test_literal_limit_with_values_matches_the_mixture():
    rng = np.random.default_rng(14)
    sig = token_sigma("relu")
    y, v = limit_sample(sig, 2, DRAWS, rng)
    assert stats.kstest(y / np.sqrt(v), "norm").pvalue > ACCEPT
    assert stats.ks_2samp(v, limit_conditional_variance(sig, 2, DRAWS, rng)).pvalue > ACCEPT


def test_bad_specs_are_errors():
    with pytest.raises(ValueError, match="token map"):
        fast_conditional_variance(ModelSpec(n=8, H=1, token_map="gelu"), 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least s"):
        naive_sample(ModelSpec(n=2, H=1), 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="scores"):
        fast_conditional_variance(ModelSpec(n=8, H=1), 10, np.random.default_rng(0), scores="full")
