"""Experiment E2: how the bound proxies grow with depth L and width N (Sakai & Imaizumi 2026, §6).

The published claim: over the 24 BERT miniatures, the spectrum-adaptive proxy B_SA grows more
slowly with L and N than the norm-based proxy B_E. :func:`run_scaling` runs the study on any
grid of checkpoints indexed by (L, N):

* ``family="miniatures"`` — ``google/bert_uncased_L-{2..12}_H-{128..768}_A-{H/64}`` from the hub
  or the local Hugging Face cache; models that cannot be had are listed in ``config.json``
  (``missing``) and the study runs on the rest;
* ``family="synthetic"`` — BERT-style encoders trained here on a seeded synthetic language
  (:mod:`.synthetic`); finished checkpoints are reused;
* ``family=<file.csv|file.json>`` — any grid: ``source, L, N[, name]`` per model
  (:func:`.grid.read_grid`).

Outputs in ``out``: ``models.csv`` (one row per model: L, N, H, source, every bound family's
value and log10 value, mean p*, norm summaries, training metrics for the synthetic family),
``exponents.csv`` (:func:`.fits.fit_exponents`), ``norms.csv``
(per model and matrix kind: mean spectral, (2,1) and (1,1) norms), ``config.json`` (config,
seed, versions, wall time, missing models) and PNG plots (:mod:`.plots`). The command also writes
``report.html`` (:func:`specbound.report.experiments.write_experiment_page`); the result's
``_repr_html_`` is its notebook display. Progress: ``ProgressEvent`` objects
(:data:`.study.Progress`), one ``run`` event per unit of work (a grid point trained or reused, a
model analysed).

Column names: ``<family>`` is the proxy's value (empty when it overflows float64),
``log10_<family>`` its log10 (always finite); B_SA is ``spectrum_adaptive``, B_E ``edelman``.

Modules: :mod:`.study` (:func:`run_scaling`), :mod:`.grid` (miniature ids, hub cache, grid
files), :mod:`.fits` (growth exponents), :mod:`.synthetic` (the offline family: recipe and
trainer, on :mod:`specbound.experiments.hf_bert`), :mod:`.plots`.
"""

from __future__ import annotations

from specbound.experiments.scaling.grid import GridEntry, miniature_ids, read_grid, resolve_entries
from specbound.experiments.scaling.study import Progress, ScalingConfig, ScalingResult, norms_11, run_scaling
from specbound.experiments.scaling.synthetic import DEFAULT_GRID, DEFAULT_RECIPE, QUICK_GRID, QUICK_RECIPE, Recipe

__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_RECIPE",
    "GridEntry",
    "Progress",
    "QUICK_GRID",
    "QUICK_RECIPE",
    "Recipe",
    "ScalingConfig",
    "ScalingResult",
    "miniature_ids",
    "norms_11",
    "read_grid",
    "resolve_entries",
    "run_scaling",
]
