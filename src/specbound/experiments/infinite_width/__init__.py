"""Experiment E4: the infinite-width limit of one attention layer is non-Gaussian
(Sakai, Karakida & Imaizumi 2025), with an exact fast finite-width sampler.

- :mod:`.samplers`: the naive (explicit weights) and exact fast (Wishart/Bartlett) finite-width
  samplers, the limit sampler, σ²_∞;
- :mod:`.density`: exact scale-mixture densities, the grid KL, the authors' KDE estimator;
- :mod:`.config`, :mod:`.units`, :mod:`.study`, :mod:`.summary`, :mod:`.plots`: the sweeps, one
  resumable unit per (sweep, seed), the tables, headline numbers and figures.
"""

from specbound.experiments.infinite_width.config import (
    DEVIATIONS,
    EXPERIMENTS,
    QUICK_DEVIATIONS,
    InfiniteWidthConfig,
    quick_config,
)
from specbound.experiments.infinite_width.study import StudyResult, run_study

__all__ = ["DEVIATIONS", "EXPERIMENTS", "QUICK_DEVIATIONS", "InfiniteWidthConfig", "StudyResult",
           "quick_config", "run_study"]
