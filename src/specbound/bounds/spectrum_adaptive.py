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
from typing import Any

import numpy as np
import pandas as pd

from specbound.bounds.base import LN10, Bound, BoundInput, BoundParams, BoundResult
from specbound.measures import log_schatten_grid, logsumexp, numerical_rank


def default_grid_m(n_layers: int, d_model: int) -> int:
    """``m = ⌈L + ln N⌉`` (natural log)."""
    return math.ceil(n_layers + math.log(d_model))


def p_grid(m: int) -> np.ndarray:
    """``P_m = {0, 1/m, 2/m, …, 2}`` (``2m + 1`` points)."""
    if m < 1:
        raise ValueError(f"grid_m must be a positive integer, got {m}")
    return np.arange(2 * m + 1, dtype=np.float64) / m


def ln_term_curve(s: np.ndarray, r: int, ln_c: float, N: int, grid: np.ndarray, rank: int | None = None) -> np.ndarray:
    """``ln T(A; p)`` for every p in ``grid`` (``-inf`` where T = 0).

    ``s``: singular values (descending; unlisted ones are zero), ``r`` = min(rows, cols),
    ``ln_c`` = ln(γ*·α·L) (may be ``-inf``), ``N`` the hidden size; ``rank``: the numerical rank
    when known (the table's, with the working precision's threshold), else float64's.
    """
    lnN = math.log(N)
    grid = np.asarray(grid, dtype=np.float64)
    out = np.empty(grid.size)
    zero = grid == 0
    if zero.any():
        rank = numerical_rank(s, r) if rank is None else rank
        out[zero] = 0.5 * (lnN + math.log(rank)) if rank > 0 else -math.inf
    p = grid[~zero]
    if p.size:
        lsp = log_schatten_grid(s, p)  # -inf for the zero matrix
        if ln_c == -math.inf or not np.isfinite(lsp).all():
            out[~zero] = -math.inf
        else:
            out[~zero] = (lsp + p * ln_c + (p + 1.0) * lnN) / (p + 2.0)
    return out


def ln_c_break(s: np.ndarray, r: int, N: int, grid: np.ndarray, rank: int | None = None) -> float:
    """``ln c_break(A)``: the largest scale ``ln c`` at which some ``p > 0`` of the grid beats
    ``p = 0`` (``bounds.md`` §4, "When adaptivity is inactive"). ``T(A; p) < T(A; 0)`` exactly when

        ln c < ((p+2)/p) · (½ ln(N·r_A) − ((p+1)/(p+2)) ln N) − (1/p) ln S_p(A),   r_A = rank A,

    so ``c_break`` is the maximum of the right-hand side over the grid's ``p > 0``, and p* > 0
    exactly when ``ln c < ln c_break``. ``nan`` for the zero matrix (rank 0: T(0) = 0, no break-even).
    """
    rank = numerical_rank(s, r) if rank is None else rank
    p = np.asarray(grid, dtype=np.float64)
    p = p[p > 0]
    if rank == 0 or p.size == 0:
        return math.nan
    lnN = math.log(N)
    rhs = ((p + 2.0) / p) * (0.5 * (lnN + math.log(rank)) - ((p + 1.0) / (p + 2.0)) * lnN) - log_schatten_grid(s, p) / p
    return float(rhs.max())


def grid_of(inp: BoundInput, params: BoundParams) -> tuple[int, np.ndarray]:
    """``(m, P_m)``: the grid resolution (``params.grid_m`` or ⌈L + ln N⌉) and the grid."""
    m = params.grid_m if params.grid_m is not None else default_grid_m(inp.info.n_layers, inp.info.d_model)
    return m, p_grid(m)


def term_table(inp: BoundInput, params: BoundParams) -> pd.DataFrame:
    """One row per matrix (keyed like the MatrixTable): ``p_star`` (first minimiser of T(A; ·) on
    the grid, also as the exact fraction ``p_star_fraction``), ``ln_term`` = ln T(A; p*),
    ``ln_term_p0`` = ln T(A; 0), ``ln_gamma``, ``ln_alpha``, the scale ``ln_scale`` = ln c =
    ln(γ*·α·L), the break-even scale ``ln_c_break`` (:func:`ln_c_break`) and the margin
    ``ln_scale_margin`` = ln c − ln c_break (> 0: p* = 0 and the spectrum is not used; < 0: p* > 0;
    ``nan`` where undefined: a zero matrix or a zero scale)."""
    L, N = inp.info.n_layers, inp.info.d_model
    m, grid = grid_of(inp, params)
    t = inp.table.frame
    rows = []
    for layer, head, kind, ln_gamma, ln_alpha, rank in zip(t["layer"], t["head"], t["kind"], t["ln_gamma"],
                                                           t["ln_alpha"], t["rank"]):
        ms = inp.spectra.matrix(layer, head, kind)
        ln_c = float(ln_gamma + ln_alpha + math.log(L))
        curve = ln_term_curve(ms.values.double().numpy(), ms.r, ln_c, N, grid, int(rank))
        k = int(np.argmin(curve))  # first minimiser; -inf (T = 0) wins
        brk = ln_c_break(ms.values.double().numpy(), ms.r, N, grid, int(rank))
        margin = ln_c - brk if math.isfinite(ln_c) and math.isfinite(brk) else math.nan
        rows.append({
            "layer": layer, "head": head, "kind": kind, "p_star": float(grid[k]),
            "p_star_fraction": str(Fraction(k, m)), "ln_term": float(curve[k]), "ln_term_p0": float(curve[0]),
            "ln_gamma": float(ln_gamma), "ln_alpha": float(ln_alpha), "ln_scale": ln_c, "ln_c_break": brk,
            "ln_scale_margin": margin,
        })
    return pd.DataFrame(rows)


def adaptivity(terms: pd.DataFrame) -> dict[str, Any]:
    """``adaptivity`` (``active`` when some matrix has p* > 0, else ``inactive``),
    ``frac_p_star_zero``, ``median_log10_scale_margin`` (decades by which the scale must shrink
    before a spectrum is used; median over the matrices where it is defined, ``None`` if none)
    of a :func:`term_table`."""
    frac = float((terms["p_star"] == 0).mean()) if len(terms) else 1.0
    margins = terms["ln_scale_margin"].to_numpy(dtype=np.float64)
    margins = margins[np.isfinite(margins)]
    return {
        "adaptivity": "inactive" if frac == 1.0 else "active",
        "frac_p_star_zero": frac,
        "median_log10_scale_margin": float(np.median(margins)) / LN10 if margins.size else None,
    }


def adaptivity_note(terms: pd.DataFrame) -> str:
    """The note of bounds.md §4: ``adaptivity: inactive`` when every p* = 0 (B_SA is then a function
    of the architecture alone), else how many matrices use their spectrum."""
    a = adaptivity(terms)
    med = a["median_log10_scale_margin"]
    margin = "undefined" if med is None else f"{med:.2f} decades"
    if a["adaptivity"] == "inactive":
        return (
            "adaptivity: inactive (frac_p_star_zero = 1.0, median scale margin "
            f"{margin}): every p* = 0, so B_SA = sum_A sqrt(N rank A) + sqrt(L), a function of the "
            "architecture alone; the scale c = gamma* alpha L must shrink by the margin before a spectrum is used"
        )
    n = len(terms)
    k = int(round((1.0 - a["frac_p_star_zero"]) * n))
    return (f"adaptivity: active on {k} of {n} matrices (frac_p_star_zero = {a['frac_p_star_zero']:.3f}, "
            f"median scale margin {margin})")


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

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        L = inp.info.n_layers
        m, grid = grid_of(inp, params)
        terms = term_table(inp, params)
        ln_total = logsumexp(np.append(terms["ln_term"].to_numpy(), 0.5 * math.log(L)))
        notes = [
            "proxy: leading complexity factors only (no n, margin, delta, constants or log factors)",
            f"Schatten grid P_m with m = {m} ({grid.size} points from 0 to 2)",
            f"L_phi = {params.l_phi}",
        ]
        notes.append(adaptivity_note(terms))
        if inp.dense:
            notes.append(
                "dense procedure: QK/OV singular values from an SVD of the formed product; the "
                "values past each head's rank are floating-point noise, not zeros"
            )
        return self.result(inp, ln_total, notes=notes, terms=terms,
                           params={"l_phi": params.l_phi, "grid_m": m, **adaptivity(terms)})
