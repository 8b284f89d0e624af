"""Experiment E3: which complexity measure tracks the generalisation gap?
(``shared/spec/experiments.md`` §E3.)

A full-factorial sweep of small Transformers on a synthetic task with a known data
distribution. Every model is trained, its gap measured on fresh test data, and every bound
family of the catalogue evaluated on its weights (with the initial weights as the reference
for the families that measure distances to initialisation). Each measure is then scored as a
predictor of the gap as the papers define the scores (:mod:`.scores`): Jiang et al. (2020)'s
Kendall τ-a over all models (τ-b beside it) and granulated τ per hyper-parameter axis and their
mean (every group counted), Dziugaite et al. (2020)'s weighted robust sign error over
environments of coupled pairs, and the plain unweighted sign error beside it.

**Tasks.**

* ``sparse-majority``: ``x ∈ {0,1}^T`` uniform, a fixed support ``S`` of ``s`` positions,
  ``y = 1`` iff the majority of the bits in ``S`` are 1 (the E1 distribution, with a shorter
  T and smaller s so that the sweep's models span fitting and not fitting). Input: ``[CLS]``
  then the T bits; ``BertForSequenceClassification`` (pooler + linear classifier on ``[CLS]``).
  Label noise flips each label with probability ρ, independently.
  Metrics: accuracy and cross-entropy.
* ``masked-synthetic``: masked-token prediction on the seeded synthetic language of E2
  (:mod:`~specbound.experiments.synthetic_language`) with ``BertForMaskedLM`` (BERT's 15 % /
  80-10-10 masking). ``n_train`` counts training sequences. Label noise replaces each word of
  the corpora, once and for all, by a uniformly random word with probability ρ.
  Metrics: masked-token accuracy and cross-entropy on fixed masks (drawn once per corpus).

**The gap** of a model is ``train accuracy − test accuracy``: on its training set and on
``n_test`` fresh samples of the *same* distribution, label noise included (the population
risk that a bound controls is that of the distribution trained on; a model that learns the
clean rule and ignores the noise has a gap near 0, one that memorises the noise a large one).
``loss_gap = test loss − train loss`` is recorded and scored next to it, and ``test_acc_clean``
(accuracy on the noise-free test set) is recorded for reference.

**Models.** BERT encoders (post-LayerNorm, GELU, no dropout) of depth ``depth`` and width
``width`` with heads of width ``head_dim`` and ``d_ff = ff_mult · width``, trained by AdamW
(weight decay on matrices only, β = (0.9, 0.98)) with 10 % linear warm-up then linear decay
over ``steps`` mini-batches of ``batch_size`` drawn with replacement, gradient clipping at 1.

**Controlled comparisons.** Models that differ in one hyper-parameter share everything else:
the task instance (support / language) and the test set depend on the seed only; the training
set of size n is the first n samples of one pool (nested), with the same noise draws; the
initial weights depend on (seed, depth, width); the mini-batch index stream on the seed.

**Measures** (the ``log10_*`` columns of ``models.csv``): ``log10_<family>`` for every
family of the catalogue that :func:`specbound.analyze` evaluates; ``log10_<family>_n_adj`` =
that family adjusted for ``n_train`` the way its bound carries the sample size (the proxies
omit it, bounds.md §5; without it a proxy cannot follow the ``n_train`` axis): a squared
measure μ (log-prod-of-spec, sum-of-Frobenius, Frobenius-over-spectral, parameter count,
Neyshabur's PAC-Bayes term) as ``sqrt(μ/n)``, as Dziugaite et al.'s code does, every other
family as ``C/sqrt(n)`` (:func:`~.measure.adjusted_log10`; ``config.json``
``sample_size_adjustment`` lists the rule of every family); and a baseline that knows nothing
of the weights, ``log10_inv_sqrt_n`` (``1/sqrt(n_train)``; ``param_count`` and
``param_count_n_adj`` are the other weight-free ones). Not scored: B_SA's adaptivity
diagnostic ``frac_p_star_zero`` and ``median_log10_scale_margin`` (bounds.md §4; from the
report's ``adaptivity``).

**Reproducibility.** Every task trains with one torch thread, so a model's numbers do not
depend on where it runs: the in-process, process-pool and Ray paths write identical
``models.csv`` files for the same seed (tested). Finished models are cached in
``OUT/models/`` (trained weights and training record, keyed by a hash of everything that
determines them); a rerun — e.g. after an interrupted sweep — reuses them and trains only
what is missing. Measures are recomputed from the cached weights every time.

Library code: no printing; progress goes to an optional callback.

Modules: :mod:`.config` (axes, settings, :class:`SweepConfig`, grid files, expansion),
:mod:`.data` (the task data), :mod:`.model` (BERT construction, training, evaluation on
:mod:`specbound.experiments.hf_bert`), :mod:`.measure` (one task: :func:`train_and_measure`),
:mod:`.sweep` (:func:`run_sweep`, the model cache), :mod:`.scores`, :mod:`.plots`.
"""

from __future__ import annotations

from specbound.experiments.correlation.config import (
    AXES,
    BASE_VALUES,
    DEFAULT_AXES,
    DEFAULT_SETTINGS,
    QUICK_AXES,
    QUICK_BASE,
    QUICK_SETTINGS,
    TASKS,
    ModelSpec,
    SweepConfig,
    default_config,
    expand_grid,
    load_grid,
    model_key,
    quick_config,
)
from specbound.experiments.correlation.data import (
    TaskData,
    make_task_data,
)
from specbound.experiments.correlation.measure import (
    train_and_measure,
)
from specbound.experiments.correlation.scores import (
    TARGETS,
    score_table,
)
from specbound.experiments.correlation.sweep import (
    SweepResult,
    run_sweep,
)

__all__ = [
    "AXES",
    "BASE_VALUES",
    "DEFAULT_AXES",
    "DEFAULT_SETTINGS",
    "ModelSpec",
    "QUICK_AXES",
    "QUICK_BASE",
    "QUICK_SETTINGS",
    "SweepConfig",
    "SweepResult",
    "TARGETS",
    "TASKS",
    "TaskData",
    "default_config",
    "expand_grid",
    "load_grid",
    "make_task_data",
    "model_key",
    "quick_config",
    "run_sweep",
    "score_table",
    "train_and_measure",
]
