"""The optimiser recipe shared by the experiments that train BERT encoders (E2 synthetic, E3).

AdamW with weight decay on matrices only (``ndim >= 2``; biases and LayerNorm gains are not
decayed), β = (0.9, 0.98), ε = 1e-6, a linear warm-up over ``max(1, ⌊warmup_frac·steps⌋)``
steps then a linear decay to 0 at ``steps``, and gradient clipping at global norm 1.
"""

from __future__ import annotations

from typing import Any

__all__ = ["adamw_warmup_linear", "optimizer_step"]


def adamw_warmup_linear(model: Any, lr: float, weight_decay: float, steps: int, warmup_frac: float
                        ) -> tuple[Any, Any]:
    """``(optimizer, scheduler)`` of the recipe for ``model``'s parameters."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warm = max(1, int(warmup_frac * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def optimizer_step(loss: Any, model: Any, opt: Any, sched: Any, where: str) -> float:
    """One update from ``loss`` (clipped at norm 1); returns the loss as a float.

    Raises ``FloatingPointError`` naming ``where`` if the loss is not finite."""
    import torch

    if not torch.isfinite(loss):
        raise FloatingPointError(f"training diverged (loss {float(loss.detach())}) {where}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return float(loss.detach())
