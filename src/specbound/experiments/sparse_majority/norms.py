"""E1 measures of one run's weights: the adapter to the library's canonical weights, the
experiment's own norms (:func:`weight_norms`) and the library's bound columns."""

from __future__ import annotations

from typing import Any

import torch

from specbound.experiments.sparse_majority.config import SparseMajorityConfig
from specbound.experiments.sparse_majority.model import BIASES, KERNELS, PARAM_NAMES


def to_transformer_weights(params: dict[str, torch.Tensor], cfg: SparseMajorityConfig,
                           source: str = "sparse_majority") -> Any:
    """Adapter: one run's weights -> :class:`specbound.weights.canonical.TransformerWeights`.

    Mapping (row-vector orientation; recorded as machine-readable notes on ``ModelInfo``):
    L = 1, N = d_model = 64, H = H_kv = 2, d_h = key_dim = 64; ``W_Q[h] = W_q[:, h·k:(h+1)·k]``
    (``W_q`` is ``[N, H·k]``), likewise K and V; ``W_O[h] = W_o[h·k:(h+1)·k, :]``;
    ``M_in`` = the 64→64 linear layer (``[64, 64]``), ``M_out`` = the read-out (``[64, 2]``,
    so N_out = 2); activation ReLU (L_φ = 1). The 1/sqrt(k) score scale is not folded into
    ``W_Q`` (as for every other adapter). Biases are in ``extras`` (outside the proxies).
    """
    from specbound.weights.canonical import LayerWeights, ModelInfo, Note, TransformerWeights

    H, k, N = cfg.n_heads, cfg.key_dim, cfg.d_model
    p = {name: t.detach() for name, t in params.items()}

    def heads_in(w: torch.Tensor) -> torch.Tensor:  # [N, H·k] -> [H, N, k]
        return w.reshape(N, H, k).permute(1, 0, 2).contiguous()

    layer = LayerWeights(
        index=0,
        W_Q=heads_in(p["W_q"]), W_K=heads_in(p["W_k"]), W_V=heads_in(p["W_v"]),
        W_O=p["W_o"].reshape(H, k, N).contiguous(),
        M_in=p["W_in"].contiguous(), M_out=p["W_out"].contiguous(),
        names={"W_Q": "W_q", "W_K": "W_k", "W_V": "W_v", "W_O": "W_o", "M_in": "W_in", "M_out": "W_out"},
        extras={name: p[name] for name in BIASES},
    )
    notes = [
        Note.of("no_feedforward_activation_between",
                "Sparse-majority model (Trauger & Tewari 2024): y = M_out^T (M_in^T relu(MHSA(x)))_[CLS]; "
                "the ReLU acts on the attention output, before M_in (the 64->64 linear), and there is "
                "no activation between M_in and M_out; no residual, no LayerNorm. ReLU is 1-Lipschitz "
                "(use l_phi = 1)."),
        Note.of("readout_as_m_out", f"Here: the {cfg.d_hidden}x{cfg.n_classes} read-out of the [CLS] position."),
    ]
    info = ModelInfo(model_type="sparse_majority", n_layers=1, d_model=N, n_heads=H, n_kv_heads=H,
                     d_head=k, d_ff=cfg.d_hidden, source=source, activation="relu", notes=notes)
    return TransformerWeights.from_layers(info, [layer])


def weight_norms(params: dict[str, torch.Tensor], cfg: SparseMajorityConfig) -> dict[str, float]:
    """Norms computed here, independently of :func:`specbound.analyze` (float64):

    ``l1_<name>`` entrywise ℓ1 norm of every kernel and bias; ``l1_sum_all_variables`` = Σ over
    every trainable variable, the twelve kernels and biases (the quantity Trauger & Tewari
    track: their script sums ``tf.norm(v, ord=1)`` over ``model.trainable_variables``);
    ``l1_sum_weights_only`` = Σ over the six kernels alone (a different quantity);
    ``l1_bias_sum``;
    ``spec_/fro_/norm21_<M>`` for the canonical matrices M ∈ {QK_h, OV_h, M_in, M_out} and the
    full projection kernels W_q, W_k, W_v, W_o ((2,1) = sum of column ℓ2 norms, row-vector
    orientation).
    """
    p = {k: v.detach().to(torch.float64) for k, v in params.items()}
    out: dict[str, float] = {}
    for name in PARAM_NAMES:
        out[f"l1_{name}"] = float(p[name].abs().sum())
    out["l1_sum_weights_only"] = sum(out[f"l1_{k}"] for k in KERNELS)
    out["l1_bias_sum"] = sum(out[f"l1_{k}"] for k in BIASES)
    out["l1_sum_all_variables"] = sum(out[f"l1_{k}"] for k in PARAM_NAMES)
    H, k = cfg.n_heads, cfg.key_dim
    mats: dict[str, torch.Tensor] = {}
    for h in range(H):
        hs = slice(h * k, (h + 1) * k)
        mats[f"QK{h}"] = p["W_q"][:, hs] @ p["W_k"][:, hs].T
        mats[f"OV{h}"] = p["W_v"][:, hs] @ p["W_o"][hs, :]
    mats["M_in"], mats["M_out"] = p["W_in"], p["W_out"]
    for name in ("W_q", "W_k", "W_v", "W_o"):
        mats[name] = p[name]
    for name, m in mats.items():
        out[f"spec_{name}"] = float(torch.linalg.matrix_norm(m, ord=2))
        out[f"fro_{name}"] = float(torch.linalg.matrix_norm(m, ord="fro"))
        out[f"norm21_{name}"] = float(torch.linalg.vector_norm(m, dim=0).sum())
    return out


def analyze_available() -> bool:
    """Whether :func:`specbound.analyze` exists in this installation."""
    try:
        import specbound

        return callable(getattr(specbound, "analyze", None))
    except Exception:  # pragma: no cover
        return False


def bound_columns(params: dict[str, torch.Tensor], cfg: SparseMajorityConfig, T: int,
                  source: str = "sparse_majority") -> dict[str, Any]:
    """INTEGRATION POINT with the core API: ``log10_<bound name>`` for every bound family
    that :func:`specbound.analyze` reports (ReLU, so ``l_phi = 1``) at sequence length T + 1
    (T bits and [CLS]; the library's ``edelman_seq_len`` is the one sequence-length family,
    bounds.md §5), and B_SA's adaptivity diagnostic from the report (``frac_p_star_zero``,
    ``median_log10_scale_margin``, bounds.md §4). Returns ``{}`` when ``specbound.analyze`` is
    not available."""
    if not analyze_available():
        return {}
    import specbound

    report = specbound.analyze(to_transformer_weights(params, cfg, source), l_phi=1.0, seq_len=T + 1)
    out: dict[str, Any] = {f"log10_{name}": float(b.log10_value) for name, b in sorted(report.bounds.items())}
    ad = report.adaptivity or {}
    out["frac_p_star_zero"] = ad.get("frac_p_star_zero")
    out["median_log10_scale_margin"] = ad.get("median_log10_scale_margin")
    return out
