"""One task of the E3 sweep: build, train (or restore), evaluate and measure one model
(:func:`train_and_measure`, importable by name for worker processes and Ray)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from specbound.experiments import hf_bert
from specbound.experiments.common import torch_threads
from specbound.experiments.correlation import model as _model
from specbound.experiments.correlation.config import AXES, ModelSpec, SweepConfig, _config_from_dict, _pool_size
from specbound.experiments.correlation.data import make_task_data


def train_and_measure(cfg_dict: dict[str, Any], hp: dict[str, Any], state: dict[str, Any] | None = None,
                      ) -> dict[str, Any]:
    """One task of the sweep (runs in a worker process or a Ray task; importable by name).

    Builds the model of ``hp``, trains it unless its trained ``state`` (a state dict) is given,
    measures train/test metrics and every measure. One torch thread throughout, so the numbers
    do not depend on where the task runs; transformers logs errors only while it runs
    (:func:`~specbound.experiments.hf_bert.quiet_transformers`). Returns ``{"row": models.csv row, "state": trained
    state dict or None, "train_seconds": float, "analysis_seconds": float, "not_evaluated":
    [{"bound": name, "reason": ...}]}`` (families without a value for this model).
    """
    cfg = _config_from_dict(cfg_dict)
    spec = ModelSpec(tuple((a, hp[a]) for a in AXES))
    t0 = time.perf_counter()
    with torch_threads(1), hf_bert.quiet_transformers():
        data = make_task_data(cfg, _pool_size(cfg), hp["label_noise"])
        init = _model.new_model(cfg, hp, data.vocab_size)
        model = _model.new_model(cfg, hp, data.vocab_size)
        trained_state = None
        last_loss = None
        if state is None:
            losses = _model.train(model, cfg, hp, data)
            last_loss = float(np.mean(losses[-max(1, len(losses) // 10):]))
            trained_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            model.load_state_dict(state["weights"])
            last_loss = state.get("train_loss_last10pct")
            model.eval()
        t1 = time.perf_counter()
        n = hp["n_train"]
        tr_acc, tr_loss = _model.evaluate(model, cfg, data.train_x[:n], data.train_y[:n], data.vocab_size, 11)
        te_acc, te_loss = _model.evaluate(model, cfg, data.test_x, data.test_y, data.vocab_size, 12)
        row: dict[str, Any] = {"model_id": spec.model_id, "task": cfg.task, "seed": cfg.seed, **spec.hp_dict,
                               "n_params": sum(p.numel() for p in model.parameters()),
                               "train_loss_last10pct": last_loss,
                               "train_acc": tr_acc, "test_acc": te_acc, "train_loss": tr_loss,
                               "test_loss": te_loss, "gap": tr_acc - te_acc, "loss_gap": te_loss - tr_loss}
        row["test_acc_clean"] = te_acc if hp["label_noise"] == 0 else _model.evaluate(
            model, cfg, data.clean_test_x, data.clean_test_y, data.vocab_size, 12)[0]
        measures, not_evaluated = _measures(model, init, cfg, hp)
        row.update(measures)
    t2 = time.perf_counter()
    out_state = None
    if trained_state is not None:
        out_state = {"weights": trained_state, "train_loss_last10pct": last_loss}
    return {"row": row, "state": out_state, "train_seconds": t1 - t0 if state is None else 0.0,
            "analysis_seconds": t2 - t1, "not_evaluated": not_evaluated}


#: Families whose value is a *squared* complexity (its bound carries sqrt(value / n)): Jiang et
#: al.'s log-prod-of-spec (Π‖A‖²), sum-of-Frobenius (d·(Π‖A‖_F²)^{1/d}), Frobenius-over-spectral
#: (Σ‖A‖_F²/‖A‖²), the parameter count, and Neyshabur et al.'s PAC-Bayes term (Π‖A‖²·Σ‖A−A⁰‖_F²/‖A‖²,
#: under a square root in their Theorem 1; Jiang's spec-init). Dziugaite et al.'s code
#: (nitarshan/robust-generalization-measures, ``data/generation/measures.py``, the final dataset-size
#: adjustment) compares every one of these measures as sqrt(μ/m) (for its ``LOG_`` measures
#: ½(ln μ − ln m), the same thing in log space). Every other family is linear in its complexity
#: (the bound is C/sqrt(n)).
SQUARED_FAMILIES = frozenset({"log_prod_spec", "sum_fro", "fro_over_spec", "param_count", "neyshabur_pac_bayes"})


def sample_size_adjustment(family: str) -> str:
    """``"sqrt(mu/n)"`` for :data:`SQUARED_FAMILIES`, else ``"C/sqrt(n)"``."""
    return "sqrt(mu/n)" if family in SQUARED_FAMILIES else "C/sqrt(n)"


def adjusted_log10(family: str, log10_value: float, n: int) -> float:
    """log10 of the family's value adjusted for the sample size ``n`` (:func:`sample_size_adjustment`)."""
    half_log_n = 0.5 * math.log10(n)
    if family in SQUARED_FAMILIES:
        return 0.5 * log10_value - half_log_n
    return log10_value - half_log_n


def _measures(model: Any, init: Any, cfg: SweepConfig, hp: Mapping[str, Any]
              ) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``log10_*`` measure columns (the family, ``log10_<family>_n_adj`` = the family adjusted for
    n_train by :func:`adjusted_log10`, and ``log10_inv_sqrt_n``), B_SA's adaptivity diagnostic
    (``frac_p_star_zero``, ``median_log10_scale_margin`` from the report's ``adaptivity``, not
    scored) and the families not evaluated (the analysis's ``bounds_not_evaluated`` plus any
    without a finite log10 value)."""
    from specbound.analysis import analyze

    s = cfg.settings_dict
    T = s["seq_len"] + (1 if cfg.task == "sparse-majority" else 0)
    report = analyze(model, init=init, seq_len=T)
    out: dict[str, Any] = {}
    not_evaluated = [dict(d) for d in report.not_evaluated]  # {"bound", "reason"}
    for name, b in sorted(report.bounds.items()):
        v = b.log10_value
        if v is None or not math.isfinite(v):
            not_evaluated.append({"bound": name, "reason": f"log10 value {v!r} is not finite"})
            continue
        out[f"log10_{name}"] = float(v)
        out[f"log10_{name}_n_adj"] = adjusted_log10(name, float(v), hp["n_train"])
    out["log10_inv_sqrt_n"] = -0.5 * math.log10(hp["n_train"])
    ad = report.adaptivity or {}
    out["frac_p_star_zero"] = ad.get("frac_p_star_zero")
    out["median_log10_scale_margin"] = ad.get("median_log10_scale_margin")
    return out, not_evaluated
