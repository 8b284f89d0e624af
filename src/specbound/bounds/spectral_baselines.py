"""Spectrally-normalised baselines over the chain of analysed matrices (bounds.md §6), labelled
``baseline``: applied to Transformers they are not bounds of the published papers.

**Chain.** This project's choice: every analysed matrix is one link, in the order of
``ModelSpectra.matrices()`` (layer by layer: QK[ℓ,0..H-1], OV[ℓ,0..H-1], M_in[ℓ], M_out[ℓ]), as
if the network were a feed-forward chain of these matrices. Attention heads act in parallel
and the softmax is not a matrix, so the chain over-counts heads (their spectral norms multiply
instead of adding); it is a baseline, not a bound for this architecture. The Lipschitz factor
of the link is ``ρ = L_φ`` for M_in (the activation follows it) and 1 for every other link.

**Bartlett, Foster & Telgarsky 2017** (spectral complexity, their Theorem 1.1 / eq. (1.2)):

    R = ( Π_i ρ_i ‖A_i‖_σ ) · ( Σ_i ‖A_iᵀ − M_iᵀ‖_{2,1}^{2/3} / ‖A_i‖_σ^{2/3} )^{3/2}

Their ``A_i`` act on column vectors, so ``A_iᵀ`` is our row-vector matrix and ``‖A_iᵀ‖_{2,1}`` is
our ``norm_21`` (sum of column norms). ``M_i`` = the reference matrix (``--init``) or 0.

**Neyshabur, Bhojanapalli & Srebro 2018** (PAC-Bayes, their Theorem 1; "spec_init" /
"spec_orig" in Jiang et al. 2020):

    S = Π_i ‖A_i‖_2² · Σ_i ‖A_i − A_i^0‖_F² / ‖A_i‖_2²

(``A_i^0`` = the reference or 0; the depth/width/margin factors of the full bound are omitted.)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from specbound.bounds.base import LN10, Bound, BoundInput, BoundParams, BoundResult, NotApplicable
from specbound.measures import logsumexp

def require_nonzero_spectral(inp: BoundInput) -> None:
    """:class:`NotApplicable` when a matrix is zero (a product of spectral norms would be 0, log −inf)."""
    zero = inp.table.zero_matrices()
    if len(zero):
        r = zero.iloc[0]
        raise NotApplicable(
            f"{len(zero)} analysed matrix/matrices are zero (first: layer {r.layer} head "
            f"{r.head} {r.kind}), so the product of spectral norms is 0 and its log is -inf"
        )


def norms_frame(inp: BoundInput) -> pd.DataFrame:
    """A copy of the MatrixTable's key and log-norm columns, to add a family's terms to."""
    return inp.table.frame[["layer", "head", "kind", "rows", "cols", "ln_spec", "ln_fro2", "ln_21", "ln_d_spec",
                            "ln_d_fro2", "ln_d_21"]].copy()


CHAIN_NOTE = (
    "chain = every QK[l,h], OV[l,h], M_in[l], M_out[l] as one link each (layer order); heads act "
    "in parallel in the model, so this is a baseline, not a bound for Transformers"
)


class BartlettSpectral(Bound):
    name = "bartlett_spectral"
    title = "Spectral complexity R_A (Bartlett, Foster & Telgarsky 2017)"
    citation = (
        "P. Bartlett, D. Foster, M. Telgarsky. Spectrally-normalized margin bounds for neural "
        "networks. NeurIPS 2017, Theorem 1.1 (spectral complexity, eq. 1.2); reference matrices "
        "M_i as in the paper (initialisation with --init, else 0)."
    )
    status = "baseline"
    assumptions = (
        "a feed-forward chain x -> sigma_L(A_L ... sigma_1(A_1 x)) with rho_i-Lipschitz activations",
        "leading complexity factor only: no margin, sample size, width log factor or constants",
    )
    needs = ("init?",)

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        require_nonzero_spectral(inp)
        df = norms_frame(inp)
        df["ln_rho"] = np.where(df["kind"] == "M_in", math.log(params.l_phi), 0.0)
        df["ln_summand"] = (2.0 / 3.0) * (df["ln_d_21"] - df["ln_spec"])
        ln_prod = float((df["ln_rho"] + df["ln_spec"]).sum())
        ln_sum = logsumexp(df["ln_summand"].to_numpy())
        if ln_sum == -math.inf:
            raise NotApplicable(
                "every (2,1) distance to the reference is zero (the model equals "
                "the reference), so the spectral complexity is 0 and its log is -inf"
            )
        ln_total = ln_prod + 1.5 * ln_sum
        terms = df[["layer", "head", "kind", "ln_rho", "ln_spec", "ln_d_21", "ln_summand"]].copy()
        notes = [
            "baseline: the chain treats heads as sequential links",
            CHAIN_NOTE,
            f"rho = L_phi = {params.l_phi} for M_in, 1 for the other links",
            f"log10 of the product of spectral norms (with rho): {ln_prod / LN10:.4f}",
        ] + inp.reference_notes("(2,1) norms")
        return self.result(inp, ln_total, notes=notes, terms=terms,
                           params={"l_phi": params.l_phi, "init": inp.reference_source, "chain_length": len(df)})


class NeyshaburPacBayes(Bound):
    name = "neyshabur_pac_bayes"
    title = "PAC-Bayes spectral term (Neyshabur, Bhojanapalli & Srebro 2018)"
    citation = (
        "B. Neyshabur, S. Bhojanapalli, N. Srebro. A PAC-Bayesian approach to spectrally-"
        "normalized margin bounds for neural networks. ICLR 2018, Theorem 1; distance form "
        "(spec-init) as in Y. Jiang et al., Fantastic Generalization Measures, ICLR 2020."
    )
    status = "baseline"
    assumptions = (
        "a feed-forward ReLU chain (1-Lipschitz, positively homogeneous activations)",
        "leading complexity factor only: no margin, depth/width factors, sample size or constants",
    )
    needs = ("init?",)

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        require_nonzero_spectral(inp)
        df = norms_frame(inp)
        df["ln_summand"] = df["ln_d_fro2"] - 2.0 * df["ln_spec"]
        ln_prod = 2.0 * float(df["ln_spec"].sum())
        ln_sum = logsumexp(df["ln_summand"].to_numpy())
        if ln_sum == -math.inf:
            raise NotApplicable(
                "every Frobenius distance to the reference is zero (the model equals "
                "the reference), so the PAC-Bayes term is 0 and its log is -inf"
            )
        terms = df[["layer", "head", "kind", "ln_spec", "ln_d_fro2", "ln_summand"]].copy()
        notes = [
            "baseline: the chain treats heads as sequential links",
            CHAIN_NOTE,
            "no activation Lipschitz factor (the published bound is for ReLU)",
            f"log10 of the product of squared spectral norms: {ln_prod / LN10:.4f}",
        ] + inp.reference_notes("Frobenius norms")
        return self.result(inp, ln_prod + ln_sum, notes=notes, terms=terms,
                           params={"init": inp.reference_source, "chain_length": len(df)})


__all__ = ["BartlettSpectral", "NeyshaburPacBayes", "CHAIN_NOTE", "norms_frame", "require_nonzero_spectral"]
