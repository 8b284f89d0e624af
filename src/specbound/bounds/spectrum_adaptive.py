"""Spectrum-adaptive Schatten proxy B_SA (Sakai & Imaizumi 2026, Section 6 and Appendix E).

For every matrix A (each QK[ℓ,h], OV[ℓ,h], M_in[ℓ], M_out[ℓ]) and Schatten index p:

    T(A; p) = S_p(A)^{1/(p+2)} · c^{p/(p+2)} · N^{(p+1)/(p+2)},   c = γ*(A) · α[ℓ] · L,

with T(A; 0) = sqrt(N · rank A). The index is chosen after training, per matrix:
p*(A) = the first minimiser of T(A; ·) over P_m = {0, 1/m, …, 2}, m = ⌈L + ln N⌉, and

    B_SA = Σ_A T(A; p*(A)) + sqrt(L).

γ* (bounds.md §4): QK: 2·C_2(OV)·C_2(M_out)·C_2(M_in); OV: C_2(M_out)·C_2(M_in); M_in: C_2(M_out);
M_out: 1. L_φ enters α only. Everything is computed in log space.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd

from specbound.bounds.base import (
    Bound,
    BoundParams,
    BoundResult,
    ln_alpha,
    logsumexp,
    safe_log,
)
from specbound.measures import log_schatten_grid, numerical_rank
from specbound.spectra.model import ModelSpectra


def default_grid_m(n_layers: int, d_model: int) -> int:
    """``m = ⌈L + ln N⌉`` (natural log)."""
    return math.ceil(n_layers + math.log(d_model))


def p_grid(m: int) -> np.ndarray:
    """``P_m = {0, 1/m, 2/m, …, 2}`` (``2m + 1`` points)."""
    if m < 1:
        raise ValueError(f"grid_m must be a positive integer, got {m}")
    return np.arange(2 * m + 1, dtype=np.float64) / m


def ln_term_curve(s: np.ndarray, r: int, ln_c: float, N: int, grid: np.ndarray) -> np.ndarray:
    """``ln T(A; p)`` for every p in ``grid`` (``-inf`` where T = 0).

    ``s``: singular values (descending; unlisted ones are zero), ``r`` = min(rows, cols),
    ``ln_c`` = ln(γ*·α·L) (may be ``-inf``), ``N`` the hidden size.
    """
    lnN = math.log(N)
    grid = np.asarray(grid, dtype=np.float64)
    out = np.empty(grid.size)
    zero = grid == 0
    if zero.any():
        rank = numerical_rank(s, r)
        out[zero] = 0.5 * (lnN + math.log(rank)) if rank > 0 else -math.inf
    p = grid[~zero]
    if p.size:
        lsp = log_schatten_grid(s, p)  # -inf for the zero matrix
        if ln_c == -math.inf or not np.isfinite(lsp).all():
            out[~zero] = -math.inf
        else:
            out[~zero] = (lsp + p * ln_c + (p + 1.0) * lnN) / (p + 2.0)
    return out


def ln_gammas(spectra: ModelSpectra) -> dict[str, np.ndarray]:
    """``ln γ*`` per kind: QK/OV ``[L, H]``, M_in/M_out ``[L]``."""
    c2 = spectra.spectral_norms()
    ln_in, ln_out = safe_log(c2["M_in"]), safe_log(c2["M_out"])
    ff = (ln_in + ln_out)[:, None]
    return {
        "QK": math.log(2.0) + safe_log(c2["OV"]) + ff,
        "OV": np.broadcast_to(ff, c2["OV"].shape).copy(),
        "M_in": ln_out.copy(),
        "M_out": np.zeros_like(ln_out),
    }


class SpectrumAdaptive(Bound):
    name = "spectrum_adaptive"
    title = "Spectrum-adaptive Schatten proxy B_SA"
    citation = (
        "M. Sakai, M. Imaizumi. Spectrum-Adaptive Generalization Bounds for Trained Deep "
        "Transformers. arXiv 2605.07297 (2026), Section 6 / Appendix E."
    )
    status = "proxy"
    assumptions = (
        "post-norm Transformer encoder with attention, an L_phi-Lipschitz activation and a "
        "two-matrix feed-forward block per layer",
        "leading complexity factors only: no sample size, margin, delta, constants or log factors",
    )

    def evaluate(self, spectra: ModelSpectra, params: BoundParams) -> BoundResult:
        info = spectra.info
        L, N = info.n_layers, info.d_model
        m = params.grid_m if params.grid_m is not None else default_grid_m(L, N)
        grid = p_grid(m)
        la = ln_alpha(spectra, params.l_phi)
        lg = ln_gammas(spectra)
        rows = []
        for layer, head, kind, ms in spectra.matrices():
            s = ms.values.double().numpy()
            g = lg[kind][layer, head] if head >= 0 else lg[kind][layer]
            ln_c = float(g + la[layer] + math.log(L))
            curve = ln_term_curve(s, ms.r, ln_c, N, grid)
            k = int(np.argmin(curve))  # first minimiser; -inf (T = 0) wins
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "kind": kind,
                    "p_star": float(grid[k]),
                    "p_star_fraction": str(Fraction(k, m)),
                    "ln_term": float(curve[k]),
                    "ln_term_p0": float(curve[0]),
                    "ln_gamma": float(g),
                    "ln_alpha": float(la[layer]),
                }
            )
        terms = pd.DataFrame(rows)
        ln_total = logsumexp(np.append(terms["ln_term"].to_numpy(), 0.5 * math.log(L)))
        notes = [
            "proxy: leading complexity factors only (no n, margin, delta, constants or log factors)",
            f"Schatten grid P_m with m = {m} ({grid.size} points from 0 to 2)",
            f"L_phi = {params.l_phi}",
        ]
        if spectra.dense:
            notes.append(
                "dense procedure: QK/OV singular values from an SVD of the formed product; the "
                "values past each head's rank are floating-point noise, not zeros"
            )
        notes += self.architecture_notes(spectra)
        return BoundResult(
            name=self.name,
            log10_value=ln_total / math.log(10),
            status=self.status,
            citation=self.citation,
            notes=notes,
            terms=terms,
            params={"l_phi": params.l_phi, "grid_m": m},
        )
