"""Distances to a reference checkpoint (``init=`` / ``--init``) without forming any product.

Bartlett et al. (2017), Neyshabur et al. (2018) and Jiang et al. (2020) measure a weight ``A`` by
its distance ``A − A_0`` to a reference ``A_0`` (usually the initialisation). For the per-head
products the difference is again a product of thin factors, with doubled head width:

    QK − QK_0 = W_Q W_Kᵀ − W_Q0 W_K0ᵀ = [W_Q | −W_Q0] [W_K | W_K0]ᵀ        (N × 2d_h factors)
    OV − OV_0 = W_V W_O − W_V0 W_O0   = [W_V | −W_V0] [W_O ; W_O0]          (2d_h-wide factors)
    M_in − M_in0, M_out − M_out0 directly.

So the *difference model* is a canonical :class:`TransformerWeights` with ``d_h' = 2·d_h`` whose
QK/OV/M_in/M_out are exactly the differences, and the existing factored spectra and
``‖·‖_{2,1}`` code (``spectra/core.py``) gives their singular values and column norms at
O(N·d_h²) per head. A head whose four factors are identical to the reference's gets exact-zero
factors (so its distance is exactly 0, not rounding noise).
"""

from __future__ import annotations

from typing import Any

import torch

from specbound.errors import InputError
from specbound.spectra.core import FFMethod
from specbound.spectra.model import ModelSpectra, compute_spectra
from specbound.weights.canonical import LayerWeights, ModelInfo, TransformerWeights

_ARCH_FIELDS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_ff")


def check_same_architecture(model: ModelInfo, ref: ModelInfo) -> None:
    """Raise :class:`InputError` naming every size that differs between model and reference."""
    diffs = [
        f"{f} {getattr(model, f)} vs {getattr(ref, f)}" for f in _ARCH_FIELDS if getattr(model, f) != getattr(ref, f)
    ]
    if diffs:
        raise InputError(
            f"--init {ref.source}: the reference checkpoint has a different architecture from "
            f"{model.source} ({'; '.join(diffs)}); distances need the same architecture "
            "(pass the initialisation or pre-trained checkpoint of this very model)."
        )


def _pair(a: torch.Tensor, b: torch.Tensor, sign: float, dim: int) -> torch.Tensor:
    """``[a | sign·b]`` along ``dim`` (per head)."""
    return torch.cat([a, sign * b], dim=dim)


def difference_layer(lw: LayerWeights, lw0: LayerWeights, info: ModelInfo) -> LayerWeights:
    """The difference layer: factors of width ``2·d_h`` whose products are ``QK − QK_0``, ``OV − OV_0``.

    ``W_Q' = [W_Q | −W_Q0]`` ``[H, N, 2d_h]``, ``W_K' = [W_K | W_K0]`` ``[H_kv, N, 2d_h]``,
    ``W_V' = [W_V | −W_V0]`` ``[H_kv, N, 2d_h]``, ``W_O' = [W_O ; W_O0]`` ``[H, 2d_h, N]``,
    ``M_in' = M_in − M_in0``, ``M_out' = M_out − M_out0``.
    """
    for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out"):
        a, b = getattr(lw, k), getattr(lw0, k)
        if a.shape != b.shape:
            raise InputError(
                f"--init: layer {lw.index} {k} has shape {tuple(a.shape)} in the model but "
                f"{tuple(b.shape)} in the reference; distances need the same architecture."
            )
    dt = torch.promote_types(lw.W_Q.dtype, lw0.W_Q.dtype)
    if not dt.is_floating_point or dt in (torch.float16, torch.bfloat16):
        dt = torch.float64
    c = {k: getattr(lw, k).to(dt) for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out")}
    c0 = {k: getattr(lw0, k).to(dt) for k in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out")}
    Wq = _pair(c["W_Q"], c0["W_Q"], -1.0, -1)
    Wk = _pair(c["W_K"], c0["W_K"], 1.0, -1)
    Wv = _pair(c["W_V"], c0["W_V"], -1.0, -1)
    Wo = _pair(c["W_O"], c0["W_O"], 1.0, -2)
    # Exact zeros for heads that did not move (frozen layers, init == model): factored spectra
    # of [W | -W][K | K]ᵀ would otherwise return rounding noise (~1e-16·σ) instead of 0.
    # K/V are expanded to query heads (the difference model has H_kv = H), so zeroing one head
    # does not touch its group mates. Exact zeros for heads that did not move (frozen layers,
    # init == model): the factored spectra of [W | -W][K | K]ᵀ would otherwise return rounding
    # noise (~1e-16·σ) instead of 0.
    g = info.kv_index().to(Wq.device)
    Wk, Wv = Wk[g].clone(), Wv[g].clone()
    zero_qk = _same_heads(c["W_Q"], c0["W_Q"]) & _same_heads(c["W_K"], c0["W_K"])[g]
    zero_ov = _same_heads(c["W_V"], c0["W_V"])[g] & _same_heads(c["W_O"], c0["W_O"])
    Wq[zero_qk] = 0.0
    Wk[zero_qk] = 0.0
    Wv[zero_ov] = 0.0
    Wo[zero_ov] = 0.0
    return LayerWeights(
        index=lw.index,
        W_Q=Wq, W_K=Wk, W_V=Wv, W_O=Wo,
        M_in=c["M_in"] - c0["M_in"], M_out=c["M_out"] - c0["M_out"],
        names={k: f"{v} - reference" for k, v in lw.names.items()},
        gated=lw.gated,
    )


def _same_heads(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[heads]`` bool: head i of ``a`` equals head i of ``b`` exactly."""
    return (a == b).flatten(1).all(dim=1)


def difference_weights(model: TransformerWeights, ref: TransformerWeights) -> TransformerWeights:
    """The canonical difference model (module docstring): ``d_h' = 2·d_h`` and ``H_kv' = H`` (K/V
    expanded to query heads); layers are built lazily, one at a time."""
    check_same_architecture(model.info, ref.info)
    info = model.info
    dinfo = ModelInfo(
        model_type=info.model_type, n_layers=info.n_layers, d_model=info.d_model, n_heads=info.n_heads,
        n_kv_heads=info.n_heads, d_head=2 * info.d_head, d_ff=info.d_ff,
        source=f"{info.source} - {ref.info.source}", activation=info.activation, notes=list(info.notes),
    )
    return TransformerWeights(dinfo, lambda i: difference_layer(model.layer(i), ref.layer(i), info))


def reference_spectra(
    model: TransformerWeights,
    init: Any,
    *,
    dtype: str | torch.dtype = "float64",
    device: str | torch.device | None = "cpu",
    dense: bool = False,
    ff_method: FFMethod = "auto",
) -> ModelSpectra:
    """Spectra of ``A − A_0`` for every analysed matrix; ``init`` is any source ``analyze`` takes."""
    from specbound.weights.adapters import open_weights

    ref = init if isinstance(init, TransformerWeights) else open_weights(init)
    diff = difference_weights(model, ref)
    return compute_spectra(diff, dtype=dtype, device=device, dense=dense, ff_method=ff_method)
