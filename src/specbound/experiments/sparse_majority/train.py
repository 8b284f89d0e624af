"""E1 batched trainer: the runs of one length T trained together (leading run dimension),
full-batch SGD with momentum, stopping at 100 % training accuracy or the epoch cap, model
selection on the validation loss; and the chunked evaluation of one run."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from specbound.experiments.common import ProgressCallback, ProgressEvent, run_rng, torch_threads
from specbound.experiments.sparse_majority.config import SparseMajorityConfig
from specbound.experiments.sparse_majority.data import SparseMajorityData, generate_data
from specbound.experiments.sparse_majority.model import (
    PARAM_NAMES,
    cls_design,
    forward_cls,
    init_params,
    model_inputs,
)


@dataclass(frozen=True)
class RunSpec:
    """One run: length ``T`` and seed index ``seed_index`` (its streams derive from
    ``(cfg.seed, T, seed_index)``)."""

    T: int
    seed_index: int


@dataclass
class RunResult:
    """Outcome of training one run. ``params``: selected (best validation loss) weights,
    unstacked float tensors; ``history``: per-epoch ``train_acc``, ``train_loss``,
    ``val_loss`` lists (index e = state after e updates); ``train_seconds``: wall time of the
    batch this run was trained in, up to the epoch the run finished."""

    spec: RunSpec
    params: dict[str, torch.Tensor]
    epochs: int
    best_epoch: int
    best_val_loss: float
    reached_train_acc: float
    stopped_at_cap: bool
    train_seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def _run_streams(cfg: SparseMajorityConfig, spec: RunSpec) -> tuple[np.random.Generator, np.random.Generator]:
    """(data stream, init stream) of a run: independent, and independent of other runs."""
    return run_rng(cfg.seed, spec.T, spec.seed_index, 0), run_rng(cfg.seed, spec.T, spec.seed_index, 1)


def run_data(cfg: SparseMajorityConfig, spec: RunSpec) -> SparseMajorityData:
    """The data of run ``spec`` (deterministic in ``cfg`` and ``spec``)."""
    return generate_data(spec.T, _run_streams(cfg, spec)[0], cfg.n_train, cfg.n_val, cfg.n_test,
                         cfg.d_model, cfg.s)


def run_init(cfg: SparseMajorityConfig, spec: RunSpec) -> dict[str, np.ndarray]:
    """The initial weights of run ``spec`` (deterministic in ``cfg`` and ``spec``)."""
    return init_params(_run_streams(cfg, spec)[1], cfg)


def bce_one_hot(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise binary cross-entropy from logits against one-hot labels (the loss of the
    authors' script: Keras ``BinaryCrossentropy(from_logits=True)`` on ``one_hot(y, 2)``), shape
    of ``logits``; its mean over the last axis is Keras' per-sample loss."""
    target = torch.nn.functional.one_hot(y, logits.shape[-1]).to(logits.dtype)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")


def _loss_acc(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run mean loss ``[R]`` (:func:`bce_one_hot` averaged over samples and logits) and
    number correct ``[R]`` (argmax, int64)."""
    loss = bce_one_hot(logits, y).mean(-1).mean(-1)  # Keras: per-sample mean over the logits, then the batch
    correct = (logits.argmax(-1) == y).sum(-1)
    return loss, correct


def lr_at(cfg: SparseMajorityConfig, epoch: int) -> float:
    """The learning rate of the update from state ``epoch`` to ``epoch + 1`` under ``cfg.schedule``.

    ``keras_exp`` (the literal protocol): the authors' ``scheduler`` (lr·0.999, floored at
    0.001) applied by Keras' ``LearningRateScheduler`` at the start of every epoch, the first
    included: ``max(lr·decay^(epoch+1), lr_min)``. ``constant``: ``lr``. ``warmup_cosine`` /
    ``warmup_linear``: ``lr·(epoch+1)/W`` for the first ``W = warmup_epochs`` updates, then from
    ``lr`` down to ``lr_min`` at update ``max_epochs`` along a half cosine / a straight line.
    """
    if cfg.schedule == "keras_exp":
        return max(cfg.lr * cfg.lr_decay ** (epoch + 1), cfg.lr_min)
    if cfg.schedule == "constant":
        return cfg.lr
    W = cfg.warmup_epochs
    if epoch < W:
        return cfg.lr * (epoch + 1) / W
    frac = min(1.0, (epoch - W) / max(1, cfg.max_epochs - W))
    if cfg.schedule == "warmup_cosine":
        return cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return cfg.lr + (cfg.lr_min - cfg.lr) * frac


@torch.no_grad()
def keras_sgd_step(params: dict[str, torch.Tensor], vel: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                   lr: float, momentum: float) -> None:
    """One SGD-with-momentum update in Keras' form, in place: ``v ← μ·v − lr·g``, ``θ ← θ + v``
    (PyTorch's ``v ← μ·v + g``, ``θ ← θ − lr·v`` differs once lr changes)."""
    for k in params:
        vel[k].mul_(momentum).sub_(lr * grads[k])
        params[k].add_(vel[k])


@torch.no_grad()
def adam_step(params: dict[str, torch.Tensor], m: dict[str, torch.Tensor], v: dict[str, torch.Tensor],
              grads: dict[str, torch.Tensor], step: int, lr: float, cfg: SparseMajorityConfig) -> None:
    """One Adam (``cfg.optimizer == "adam"``) or AdamW (decoupled weight decay ``lr·wd·θ``)
    update in place, step ``step`` ≥ 1 for the bias corrections (Kingma & Ba; PyTorch's
    formulas). Elementwise, so a run's update does not depend on its batch mates."""
    b1, b2 = cfg.beta1, cfg.beta2
    c1, c2 = 1.0 - b1 ** step, 1.0 - b2 ** step
    for k, p in params.items():
        g = grads[k]
        if cfg.optimizer == "adamw" and cfg.weight_decay:
            p.mul_(1.0 - lr * cfg.weight_decay)
        elif cfg.weight_decay:
            g = g + cfg.weight_decay * p
        m[k].mul_(b1).add_(g, alpha=1.0 - b1)
        v[k].mul_(b2).addcmul_(g, g, value=1.0 - b2)
        denom = (v[k] / c2).sqrt_().add_(cfg.adam_eps)
        p.addcdiv_(m[k], denom, value=-lr / c1)


def train_runs(cfg: SparseMajorityConfig, specs: Sequence[RunSpec],
               data: Sequence[SparseMajorityData] | None = None,
               progress: ProgressCallback | None = None, keep_history: bool = False,
               progress_every: int = 100) -> list[RunResult]:
    """Train runs of one length T together as one batched model (leading run dimension).

    Full-batch steps of ``cfg.optimizer``: ``sgd`` is SGD with momentum in Keras' form
    (``v ← μ·v − lr_t·g``, ``θ ← θ + v``, as the authors' Keras optimiser), ``adam``/``adamw``
    :func:`adam_step`; lr_t = :func:`lr_at` for the update from state t to t+1 (the literal
    ``keras_exp`` schedule: max(lr·decay^(t+1), lr_min), applied before the first epoch too, as
    Keras' ``LearningRateScheduler`` does).
    Loss: :func:`bce_one_hot`. State t is evaluated (train accuracy/loss, validation loss) before its update;
    a run stops at the first state with 100% training accuracy or after ``cfg.max_epochs``
    updates; the state with the lowest validation loss among states 1..stop is kept.
    Finished runs leave the batch. Returns results in the order of ``specs``.
    """
    if not specs:
        return []
    Ts = {sp.T for sp in specs}
    if len(Ts) != 1:
        raise ValueError(f"train_runs needs runs of one length T, got {sorted(Ts)}")
    T = specs[0].T
    dt = cfg.torch_dtype
    if data is None:
        data = [run_data(cfg, sp) for sp in specs]
    t0 = time.perf_counter()
    with torch_threads(cfg.num_threads):
        inits = [run_init(cfg, sp) for sp in specs]
        params = {k: torch.stack([torch.as_tensor(p[k], dtype=dt) for p in inits]) for k in PARAM_NAMES}
        vel = {k: torch.zeros_like(v) for k, v in params.items()}
        sq = {k: torch.zeros_like(v) for k, v in params.items()}  # Adam's second moments
        best = {k: v.clone() for k, v in params.items()}
        tr = [model_inputs(dd, "train", dt) for dd in data]
        va = [model_inputs(dd, "val", dt) for dd in data]
        b_tr = cls_design(torch.stack([t[0] for t in tr]))
        b_va = cls_design(torch.stack([t[0] for t in va]))
        x0 = torch.stack([t[1] for t in tr])
        d_emb = torch.stack([t[2] for t in tr])
        y_tr = torch.stack([torch.from_numpy(dd.y_train) for dd in data])
        y_va = torch.stack([torch.from_numpy(dd.y_val) for dd in data])
        n_tr = y_tr.shape[1]
        R = len(specs)
        active = list(range(R))  # original indices of the rows of the batch
        best_val = [math.inf] * R
        best_epoch = [0] * R
        hist: list[dict[str, list[float]]] = [{"train_acc": [], "train_loss": [], "val_loss": []} for _ in range(R)]
        results: list[RunResult | None] = [None] * R
        epoch = 0
        while active:
            for v in params.values():
                v.requires_grad_(True)
            logits = forward_cls(params, b_tr, x0, d_emb, cfg.n_heads)
            loss, correct = _loss_acc(logits, y_tr)
            with torch.no_grad():
                vloss, _ = _loss_acc(forward_cls(params, b_va, x0, d_emb, cfg.n_heads), y_va)
            loss_l, corr_l, vloss_l = loss.tolist(), correct.tolist(), vloss.tolist()
            bad = [specs[r].seed_index for i, r in enumerate(active)
                   if not (math.isfinite(loss_l[i]) and math.isfinite(vloss_l[i]))]
            if bad:
                raise FloatingPointError(
                    f"E1 training at T={T} diverged: non-finite loss at epoch {epoch} for seed index(es) "
                    f"{bad} (optimizer {cfg.optimizer}, lr {cfg.lr}); use a smaller lr or dtype float64")
            # model selection on states 1..stop
            if epoch >= 1:
                improved = [vloss_l[i] < best_val[r] for i, r in enumerate(active)]
                if any(improved):
                    mask = torch.tensor(improved)
                    with torch.no_grad():
                        for k in PARAM_NAMES:
                            m = mask.view(-1, *([1] * (params[k].ndim - 1)))
                            best[k] = torch.where(m, params[k].detach(), best[k])
                    for i, r in enumerate(active):
                        if improved[i]:
                            best_val[r] = vloss_l[i]
                            best_epoch[r] = epoch
            if keep_history:
                for i, r in enumerate(active):
                    hist[r]["train_acc"].append(corr_l[i] / n_tr)
                    hist[r]["train_loss"].append(loss_l[i])
                    hist[r]["val_loss"].append(vloss_l[i])
            done = [i for i, r in enumerate(active)
                    if epoch >= 1 and (corr_l[i] == n_tr or epoch >= cfg.max_epochs)]
            grads = None
            if len(done) < len(active):
                grads = torch.autograd.grad(loss.sum(), [params[k] for k in PARAM_NAMES])
            elapsed = time.perf_counter() - t0
            for i in done:
                r = active[i]
                results[r] = RunResult(
                    spec=specs[r], params={k: best[k][i].detach().clone() for k in PARAM_NAMES},
                    epochs=epoch, best_epoch=best_epoch[r], best_val_loss=best_val[r],
                    reached_train_acc=corr_l[i] / n_tr, stopped_at_cap=corr_l[i] != n_tr,
                    train_seconds=elapsed, history=hist[r] if keep_history else {})
            keep = [i for i in range(len(active)) if i not in set(done)]
            if not keep:
                break
            lr = lr_at(cfg, epoch)
            with torch.no_grad():
                g = dict(zip(PARAM_NAMES, grads, strict=True))
                if len(keep) < len(active):
                    idx = torch.tensor(keep)
                    params = {k: v.detach().index_select(0, idx) for k, v in params.items()}
                    vel = {k: v.index_select(0, idx) for k, v in vel.items()}
                    sq = {k: v.index_select(0, idx) for k, v in sq.items()}
                    best = {k: v.index_select(0, idx) for k, v in best.items()}
                    g = {k: v.index_select(0, idx) for k, v in g.items()}
                    x0, d_emb, b_tr, y_tr = x0[idx], d_emb[idx], b_tr[idx], y_tr[idx]
                    b_va, y_va = b_va[idx], y_va[idx]
                    active = [active[i] for i in keep]
                else:
                    params = {k: v.detach() for k, v in params.items()}
                if cfg.optimizer == "sgd":
                    keras_sgd_step(params, vel, g, lr, cfg.momentum)
                else:
                    adam_step(params, vel, sq, g, epoch + 1, lr, cfg)
            epoch += 1
            if progress is not None and epoch % progress_every == 0:
                progress(ProgressEvent(kind="group", message=f"T={T}: epoch {epoch}, {len(active)} runs training",
                                       info={"T": T, "epoch": epoch, "active": len(active)}))
    return [r for r in results if r is not None]


@torch.no_grad()
def evaluate(params: dict[str, torch.Tensor], data: SparseMajorityData, split: str,
             cfg: SparseMajorityConfig) -> tuple[float, float]:
    """(accuracy by argmax, mean loss (:func:`bce_one_hot`, as the training loss)) of one run's
    ``params`` on ``split``, in fixed chunks of ``cfg.eval_chunk`` samples (deterministic; loss
    accumulated in float64)."""
    dt = cfg.torch_dtype
    stacked = {k: v.to(dt)[None] for k, v in params.items()}
    bits, x0, d_emb = model_inputs(data, split, dt)
    x0, d_emb = x0[None], d_emb[None]
    y = getattr(data, f"y_{split}")
    total_loss, total_correct = 0.0, 0
    with torch_threads(cfg.num_threads):
        for a in range(0, len(y), cfg.eval_chunk):
            yy = torch.from_numpy(y[a:a + cfg.eval_chunk])[None]
            logits = forward_cls(stacked, bits[None, a:a + cfg.eval_chunk], x0, d_emb, cfg.n_heads)
            total_loss += float(bce_one_hot(logits[0].double(), yy[0]).mean(-1).sum())
            total_correct += int((logits[0].argmax(-1) == yy[0]).sum())
    return total_correct / len(y), total_loss / len(y)
