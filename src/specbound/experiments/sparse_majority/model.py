"""E1 model: the initialisation of the authors' script (Keras defaults), the exact CLS-only batched forward
(:func:`forward_cls`) and the textbook forward it is checked against."""

from __future__ import annotations

import math

import numpy as np
import torch

from specbound.experiments.sparse_majority.config import SparseMajorityConfig
from specbound.experiments.sparse_majority.data import CLS, SparseMajorityData


PARAM_NAMES = ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o", "W_in", "b_in", "W_out", "b_out")
KERNELS = ("W_q", "W_k", "W_v", "W_o", "W_in", "W_out")
BIASES = ("b_q", "b_k", "b_v", "b_o", "b_in", "b_out")


def _glorot(rng: np.random.Generator, shape: tuple[int, ...], keras_shape: tuple[int, ...]) -> np.ndarray:
    """Keras' ``glorot_uniform`` for a kernel Keras stores with ``keras_shape``, drawn and
    returned with ``shape`` (same number of entries). Keras' fans: for a 2-D shape
    ``(fan_in, fan_out)``; for more dimensions ``fan_in = shape[-2]·r``, ``fan_out = shape[-1]·r``
    with ``r = Π shape[:-2]`` (its receptive-field size)."""
    if len(keras_shape) == 2:
        fan_in, fan_out = keras_shape
    else:
        r = math.prod(keras_shape[:-2])
        fan_in, fan_out = keras_shape[-2] * r, keras_shape[-1] * r
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, size=shape)


#: Standard deviation of the read-out's initial weights (Keras ``random_normal`` default).
READOUT_STD = 0.05


def init_params(rng: np.random.Generator, cfg: SparseMajorityConfig) -> dict[str, np.ndarray]:
    """Initialisation of the authors' script (Keras defaults; row-vector kernels ``[in, out]``):

    ``W_q, W_k, W_v``: ``[d, H·key_dim]``, glorot-uniform with the fans Keras computes for its
    3-D ``MultiHeadAttention`` kernels ``[d, H, key_dim]`` (fan_in = H·d, fan_out = key_dim·d);
    ``W_o``: ``[H·key_dim, d]`` from Keras' ``[H, key_dim, d]`` (fan_in = key_dim·H,
    fan_out = d·H); ``W_in``: ``[d, d_hidden]`` glorot-uniform (a ``Dense`` layer);
    ``W_out``: ``[d_hidden, n_classes]`` drawn N(0, 0.05²) (their ``Last_Linear`` uses
    ``random_normal``); biases zero. ``cfg.attn_init_scale`` (1 in the literal protocol)
    multiplies ``W_q`` and ``W_k`` after drawing (the same draws, scaled).
    """
    d, H, k = cfg.d_model, cfg.n_heads, cfg.key_dim
    hk = H * k
    p = {
        "W_q": _glorot(rng, (d, hk), (d, H, k)), "W_k": _glorot(rng, (d, hk), (d, H, k)),
        "W_v": _glorot(rng, (d, hk), (d, H, k)), "W_o": _glorot(rng, (hk, d), (H, k, d)),
        "W_in": _glorot(rng, (d, cfg.d_hidden), (d, cfg.d_hidden)),
        "W_out": rng.normal(0.0, READOUT_STD, size=(cfg.d_hidden, cfg.n_classes)),
    }
    if cfg.attn_init_scale != 1.0:
        p["W_q"] = p["W_q"] * cfg.attn_init_scale
        p["W_k"] = p["W_k"] * cfg.attn_init_scale
    p.update(b_q=np.zeros(hk), b_k=np.zeros(hk), b_v=np.zeros(hk), b_o=np.zeros(d),
             b_in=np.zeros(cfg.d_hidden), b_out=np.zeros(cfg.n_classes))
    return {k_: p[k_] for k_ in PARAM_NAMES}


def cls_design(bits: torch.Tensor) -> torch.Tensor:
    """``[bits, 1 − bits]`` along the last axis: the constant left factor of :func:`forward_cls`."""
    return torch.cat([bits, 1.0 - bits], dim=-1)


def forward_cls(params: dict[str, torch.Tensor], bits: torch.Tensor, x0: torch.Tensor,
                d_emb: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Logits of a batch of runs, computing only the [CLS] query row of the attention.

    Why this is exact: the model has one attention layer, no residual and reads out position T
    ([CLS]) only, so every output depends on the attention output at position T alone, which
    needs the [CLS] query and all keys and values, never the other T query rows. Every input row
    is ``x[i, t] = x0[t] + b[i, t] · d_emb`` with ``x0[t] = PE[t] + E["0"]`` for t < T,
    ``x0[T] = PE[T] + E[CLS]``, ``d_emb = E["1"] − E["0"]`` and ``b[i, T] = 0`` (see
    :func:`model_inputs`), so per head the score of position t is ``s0[t] + b[i, t]·δ`` and its
    value ``v0[t] + b[i, t]·dv`` (keys, values and scores are affine in the bit). With a shift
    ``c`` per (run, head), ``e_b[t] = exp(s0[t] + b·δ − c)`` for b ∈ {0, 1}, the head output of
    sample i is

        ``Σ_t e_{b_it}[t]·value_b[t] / Σ_t e_{b_it}[t]
          = ([b_i, 1 − b_i] @ [[e_1·(v0 + dv), e_1]; [e_0·v0, e_0]])[:k] / (…)[k]``,

    the softmax-weighted average written as ONE matrix product of the constant 0/1 matrix
    ``[bits, 1 − bits]`` (``[n, 2(T+1)]``) with a ``[2(T+1), H·(k+1)]`` matrix built from the
    T+1 positions: O(n·T·H·k) multiply-adds in a GEMM and no ``[n, T+1]`` elementwise tensors
    (softmax, masks) at all. Every summand is non-negative in the denominator, as in a softmax
    (no cancellation). The shift ``c = max_t s0[t] + δ/2`` cancels exactly (treated as a
    constant); the largest exponent is ``|δ|/2`` and every sample's denominator is at least
    ``exp(−|δ|/2)`` (its term at ``argmax s0``), so nothing overflows and the denominator stays
    positive unless ``|δ|`` exceeds twice the log of the dtype's range (the trainer stops with
    an error on a non-finite loss). Terms whose exponent is below ``log(finfo.tiny)`` are set
    to 0 instead of denormals (a change below the smallest normal number per term; denormal
    arithmetic is what made saturated runs slow). Checked against :func:`forward_reference`
    (outputs and gradients to 1e-10 in float64).

    ``params``: stacked, each with a leading run dimension R (``W_q``: ``[R, d, H·k]``, …).
    ``bits``: ``[R, n, T+1]`` float 0/1, or its design ``[bits, 1 − bits]`` (``[R, n, 2(T+1)]``,
    :func:`cls_design`; the trainer builds it once). ``x0``: ``[R, T+1, d]``. ``d_emb``:
    ``[R, d]``. Returns logits ``[R, n, n_classes]``.
    """
    R, n = bits.shape[:2]
    T1 = x0.shape[1]
    design = bits if bits.shape[-1] == 2 * T1 else cls_design(bits)
    H = n_heads
    d, hk = params["W_q"].shape[-2:]
    k = hk // H
    q = (torch.bmm(x0[:, -1:, :], params["W_q"]).squeeze(1) + params["b_q"]).view(R, H, k) / math.sqrt(k)
    k0 = (torch.bmm(x0, params["W_k"]) + params["b_k"][:, None, :]).view(R, T1, H, k)
    dk = torch.bmm(d_emb[:, None, :], params["W_k"]).view(R, H, k)
    v0 = (torch.bmm(x0, params["W_v"]) + params["b_v"][:, None, :]).view(R, T1, H, k)
    dv = torch.bmm(d_emb[:, None, :], params["W_v"]).view(R, 1, H, k)
    # product + sum, not einsum/matmul: those route a batch of one run through another kernel
    # (other rounding), which would make a run's numbers depend on its batch mates
    s0 = (k0 * q[:, None, :, :]).sum(-1)  # [R, T+1, H] score of position t when its bit is 0
    delta = (q * dk).sum(-1)  # [R, H] score change when the bit is 1
    c = (s0.detach().amax(1) + 0.5 * delta.detach())[:, None, :]  # [R, 1, H], cancels exactly
    tiny = math.log(torch.finfo(s0.dtype).tiny)
    z0 = s0 - c
    z1 = z0 + delta[:, None, :]
    e0 = torch.where(z0 < tiny, torch.zeros_like(z0), torch.exp(z0))[..., None]  # [R, T+1, H, 1]
    e1 = torch.where(z1 < tiny, torch.zeros_like(z1), torch.exp(z1))[..., None]
    m1 = torch.cat([e1 * (v0 + dv), e1], dim=-1)  # [R, T+1, H, k+1]: bit 1 (value, weight)
    m0 = torch.cat([e0 * v0, e0], dim=-1)  # bit 0
    mat = torch.cat([m1, m0], dim=1).reshape(R, 2 * T1, H * (k + 1))
    g = torch.bmm(design, mat).view(R, n, H, k + 1)
    head = (g[..., :k] / g[..., k:]).reshape(R, n, hk)  # [R, n, H·k], heads in W_o's order
    attn = torch.bmm(head, params["W_o"]) + params["b_o"][:, None, :]
    hid = torch.bmm(torch.relu(attn), params["W_in"]) + params["b_in"][:, None, :]
    return torch.bmm(hid, params["W_out"]) + params["b_out"][:, None, :]


def model_inputs(data: SparseMajorityData, split: str, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(bits [n, T+1], x0 [T+1, d], d_emb [d])`` of a split for :func:`forward_cls`."""
    x = getattr(data, f"x_{split}")
    bits = np.concatenate([x, np.zeros((x.shape[0], 1), dtype=x.dtype)], axis=1)
    x0 = data.pos_enc + data.embeddings[0][None]
    x0[-1] = data.pos_enc[-1] + data.embeddings[CLS]
    d_emb = data.embeddings[1] - data.embeddings[0]
    return (torch.as_tensor(bits, dtype=dtype), torch.as_tensor(x0, dtype=dtype),
            torch.as_tensor(d_emb, dtype=dtype))


def forward_reference(params: dict[str, torch.Tensor], x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Textbook forward of one run on embedded inputs, for checking :func:`forward_cls`.

    ``params``: unstacked (``W_q``: ``[d, H·k]``, …). ``x``: ``[n, T+1, d]`` inputs
    ``E[token] + PE``. Full self-attention over all positions, then ReLU, linear, read-out
    of position T. Returns ``[n, n_classes]``.
    """
    n, T1, d = x.shape
    hk = params["W_q"].shape[-1]
    H, k = n_heads, hk // n_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, T1, H, k).transpose(1, 2)  # [n, H, T+1, k]

    Q = split(x @ params["W_q"] + params["b_q"])
    K = split(x @ params["W_k"] + params["b_k"])
    Vv = split(x @ params["W_v"] + params["b_v"])
    A = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(k), dim=-1)
    out = (A @ Vv).transpose(1, 2).reshape(n, T1, hk) @ params["W_o"] + params["b_o"]
    hid = torch.relu(out) @ params["W_in"] + params["b_in"]
    return hid[:, -1, :] @ params["W_out"] + params["b_out"]
