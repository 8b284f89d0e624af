"""Experiment E1: sparse majority (Trauger & Tewari 2024), ``shared/spec/experiments.md`` §E1.

Does the generalisation gap, the entrywise ℓ1 norm of the weights, or any bound proxy grow
with the sequence length T?

Protocol (and where this implementation deviates; every deviation is also recorded in
``config.json`` under ``"deviations"``):

* Data per run (seeded): ``x ∈ {0,1}^T`` uniform, a fixed support ``S`` of ``s = 9``
  positions, label ``y = 1`` iff at least 5 of the 9 bits in S are 1. Token embeddings
  ("0", "1", "[CLS]") in R^64: drawn U(−1, 1)^64, Gram–Schmidt orthogonalised, each scaled to
  unit ℓ1 norm (the authors' script). [CLS] is appended last (position T); the sinusoidal
  positional encoding of the authors' script (``PE[t, i] = sin(t / 10000^{i/d})`` for even i,
  ``cos(…)`` for odd i: exponent i/d) is added at every position 0..T. Embeddings are fixed
  (not trained).
* Model: one multi-head self-attention layer (2 heads, Keras-style ``key_dim`` 64 per head,
  value dim 64, output projection back to 64, with biases, scores scaled by 1/sqrt(64)),
  ReLU, a linear layer 64→64, a linear read-out of the [CLS] position to 2 logits. No
  residual, no LayerNorm. Kernels Glorot-uniform with Keras' fans (for the attention
  kernels those of Keras' 3-D kernels), biases zero, read-out N(0, 0.05²) (the script's
  ``random_normal``).
* Training, **literal protocol** (``protocol_config("literal")``, the field defaults of
  :class:`SparseMajorityConfig`): binary cross-entropy from logits on one-hot labels (the
  script's loss; also the reported losses and the selection loss), SGD, lr 0.01, momentum 0.9
  in Keras' form (``v ← μv − lr·g``, ``θ ← θ + v``),
  ``lr_t = max(0.01 · 0.999^(t+1), 0.001)``; **full-batch** steps on the 300 training samples
  (the original used mini-batches); stop at the first state with 100% training accuracy or at
  the epoch cap; keep the weights with the best loss on a **separate validation set** (the
  original selected on its test set). Candidates for selection are the states after each
  update (epochs 1..E), as a per-epoch checkpoint callback would see them. Measured: the runs
  at T ≥ 128 stay near chance training accuracy within 16,000 epochs.
* Training, **fit protocol** (``protocol_config("fit")``, the CLI's default, experiments.md E1):
  the same data, model, loss, stopping rule and selection, with the optimiser, schedule,
  initial attention scale and budget of :data:`PROTOCOLS` ``["fit"]`` (chosen by measurement,
  ``scripts/e1_protocol_search.py``; what changes is :data:`FIT_CHANGES`). config.json records
  every setting under ``"config"`` and ``"protocol"``.
* Measured per run on fresh test data (10,000 samples): train/test accuracy and loss and
  their gaps; the entrywise ℓ1 norm of every trainable variable and their sum
  ``l1_sum_all_variables`` (Trauger & Tewari's tracked quantity: weights and biases), the sum
  over the six weight matrices alone ``l1_sum_weights_only`` (a different quantity) and
  ``l1_bias_sum``; spectral/Frobenius/(2,1) norms of the canonical matrices; every bound
  proxy of :func:`specbound.analyze` evaluated at sequence length T + 1 (so the library's
  ``edelman_seq_len`` = B_E·sqrt(ln(T+1)) is the one sequence-length variant, bounds.md §5);
  B_SA's adaptivity diagnostic ``frac_p_star_zero``, ``median_log10_scale_margin``.
* Trends: every quantity's slope against log2 T twice, over all runs and over the runs that
  reached 100% training accuracy (``runs`` = all / fitted in ``trends.csv``), with the number
  of runs stopped at the epoch cap per T (``capped_per_T``) in the table and the plots.

Engineering:

* **CLS-only forward.** With one layer, no residual and a read-out of the [CLS] position,
  only the [CLS] query row of the attention matters, and every input row is
  ``E[bit] + PE[t]``, so a position's score and value are affine in its bit.
  :func:`forward_cls` uses both facts: the softmax-weighted values of all samples are one
  matrix product of the constant 0/1 matrix ``[bits, 1 − bits]`` with a matrix built from the
  T + 1 positions (O(n·T·H·k) in a GEMM, no per-sample softmax tensors); it computes the same
  function as the textbook :func:`forward_reference` (tests check outputs and gradients to
  1e-10 in float64).
* **Batched runs.** All runs of one length T are trained together as one model whose
  parameters carry a leading run dimension ``R`` (``torch.bmm``/``einsum``). A run's
  initialisation and data come from its own seed stream; its loss enters the total as a
  separate summand; the optimiser is elementwise; finished runs leave the batch. Tests check
  that a run trained alone and the same run trained in a batch with others give bit-identical
  results on CPU (same thread count).

Library code: no printing; progress goes to an optional callback.

Modules: :mod:`.config` (configuration, presets, deviations), :mod:`.data` (the seeded task),
:mod:`.model` (initialisation and forwards), :mod:`.train` (the batched trainer and the
evaluation), :mod:`.norms` (adapter, the experiment's own norms, bound columns), :mod:`.study`
(the study, the run cache and the trends), :mod:`.plots`. Every public name is re-exported here.
"""

from __future__ import annotations

from specbound.experiments.sparse_majority.config import (
    FIT_CHANGES,
    PROTOCOL_DEVIATIONS,
    PROTOCOLS,
    QUICK_DEVIATIONS,
    SparseMajorityConfig,
    protocol_config,
    quick_config,
)
from specbound.experiments.sparse_majority.data import (
    CLS,
    SparseMajorityData,
    generate_data,
    majority_labels,
    make_embeddings,
    sinusoidal_encoding,
)
from specbound.experiments.sparse_majority.model import (
    BIASES,
    KERNELS,
    PARAM_NAMES,
    forward_cls,
    forward_reference,
    init_params,
    model_inputs,
)
from specbound.experiments.sparse_majority.norms import (
    analyze_available,
    bound_columns,
    to_transformer_weights,
    weight_norms,
)
from specbound.experiments.sparse_majority.plots import (
    make_plots,
)
from specbound.experiments.sparse_majority.study import (
    SparseMajorityResult,
    compute_trends,
    run_study,
)
from specbound.experiments.sparse_majority.train import (
    RunResult,
    RunSpec,
    evaluate,
    run_data,
    run_init,
    train_runs,
)

__all__ = [
    "BIASES",
    "CLS",
    "KERNELS",
    "PARAM_NAMES",
    "FIT_CHANGES",
    "PROTOCOLS",
    "PROTOCOL_DEVIATIONS",
    "QUICK_DEVIATIONS",
    "RunResult",
    "RunSpec",
    "SparseMajorityConfig",
    "SparseMajorityData",
    "analyze_available",
    "bound_columns",
    "compute_trends",
    "evaluate",
    "forward_cls",
    "forward_reference",
    "generate_data",
    "init_params",
    "majority_labels",
    "make_embeddings",
    "make_plots",
    "model_inputs",
    "protocol_config",
    "quick_config",
    "run_data",
    "run_init",
    "SparseMajorityResult",
    "run_study",
    "sinusoidal_encoding",
    "to_transformer_weights",
    "train_runs",
    "weight_norms",
]
