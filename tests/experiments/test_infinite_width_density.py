"""E4 densities and KL estimators: the exact mixture density integrates to 1 and matches a
histogram, the grid KL against closed forms, the floor, the authors' KDE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import gaussian_kde

from specbound.experiments.infinite_width.density import (
    gaussian_kl,
    grid_kl,
    kde_kl,
    kde_log_density,
    log_gaussian,
    log_mixture_density,
    mixture_grid,
)
from specbound.experiments.infinite_width.samplers import (
    ModelSpec,
    fast_conditional_variance,
    limit_conditional_variance,
    limit_sample,
    sigma2_infinity,
    token_sigma,
)


@pytest.fixture(scope="module")
def limit_draws():
    rng = np.random.default_rng(20)
    return limit_sample(np.eye(4), 1, 20_000, rng)


def test_mixture_density_integrates_to_one_and_matches_a_histogram(limit_draws):
    y, v = limit_draws
    grid = mixture_grid(v)
    assert float(np.sum(grid.w * np.exp(log_mixture_density(grid.y, v)))) == pytest.approx(1.0, abs=1e-9)
    # the density of the first half of the draws against a histogram of the other half's samples
    dens_v, ys = v[:10_000], y[10_000:]
    edges = np.linspace(-2.5, 2.5, 26)
    counts, _ = np.histogram(ys, bins=edges)
    fine = np.linspace(-2.5, 2.5, 2501)
    p = np.exp(log_mixture_density(np.abs(fine), dens_v))
    cdf = np.concatenate([[0.0], np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(fine))])
    expected = np.diff(np.interp(edges, fine, cdf)) * ys.size
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 60.0  # 25 bins: the 0.999 quantile of chi2(25) is 52.6, plus the density's own noise
    # the peak is 2.5% above that of the Gaussian of the same variance (Jensen: the limit is not Gaussian)
    assert float(np.exp(log_mixture_density(np.array([0.0]), v))[0]) > 1.02 / math.sqrt(2 * math.pi * v.mean())


def test_grid_kl_between_gaussians_is_the_closed_form():
    for vp, vq in ((1.0, 2.0), (0.3, 0.25), (5.0, 1.0)):
        grid = mixture_grid(np.array([vp, vq]))
        got = grid_kl(log_gaussian(grid.y, vp), log_gaussian(grid.y, vq), grid)
        assert got == pytest.approx(gaussian_kl(vp, vq), rel=1e-7)
        # a mixture with all components equal is that Gaussian
        lm = log_mixture_density(grid.y, np.full(100, vp))
        assert np.allclose(lm, log_gaussian(grid.y, vp))


def test_kl_of_a_law_to_itself_is_its_floor_and_finite_width_is_resolved():
    rng = np.random.default_rng(21)
    m = 10_000
    va, vb = (limit_conditional_variance(np.eye(4), 2, m, rng) for _ in range(2))
    vf = fast_conditional_variance(ModelSpec(n=16, H=2), m, rng)
    grid = mixture_grid(va, vb, vf)
    la, lb, lf = (log_mixture_density(grid.y, v) for v in (va, vb, vf))
    floor = grid_kl(lb, la, grid)
    assert 0.0 <= floor < 2e-5
    assert grid_kl(lf, la, grid) > 100 * floor  # n = 16 is far from the limit
    # and KL(limit || N(0, sigma2_inf)) at H = 2 (about 3e-4) is far above the floor
    s2 = sigma2_infinity(np.eye(4))
    assert grid_kl(la, log_gaussian(grid.y, s2), grid) > 20 * floor


def test_grid_is_converged():
    rng = np.random.default_rng(22)
    vf = fast_conditional_variance(ModelSpec(n=16, H=2, token_map="relu"), 5_000, rng)
    va = limit_conditional_variance(token_sigma("relu"), 2, 5_000, rng)
    kls = []
    for du in (0.04, 0.01):
        g = mixture_grid(vf, va, du=du)
        kls.append(grid_kl(log_mixture_density(g.y, vf), log_mixture_density(g.y, va), g))
    assert kls[0] == pytest.approx(kls[1], rel=1e-6)


def test_kde_matches_scipy_and_sees_its_larger_floor(limit_draws):
    y, _ = limit_draws
    x = np.linspace(y.min(), y.max(), 500)
    a, b = y[:5_000], y[10_000:15_000]
    assert np.allclose(np.exp(kde_log_density(a, x)), gaussian_kde(a)(x), atol=1e-12)
    floor = kde_kl(b, a, x)
    assert 0 < floor < 0.01
    assert kde_kl(a, None, x, q_var=sigma2_infinity(np.eye(4))) > 0
    with pytest.raises(ValueError, match="q_samples or q_var"):
        kde_kl(a, None, x)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="positive"):
        log_mixture_density(np.zeros(3), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="no positive"):
        mixture_grid(np.array([0.0]))
