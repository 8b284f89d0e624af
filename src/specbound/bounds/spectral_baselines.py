"""Spectrally-normalised baselines over this project's layer chain (bounds.md §6), labelled
``baseline``: applied to Transformers they are not bounds of the published papers.

**Chain** (this project's layer chain, :attr:`~specbound.measures.MatrixTable.links`): per layer
ℓ, in order, three links: the value path ``VO[ℓ] = W_V W_O = Σ_h OV[ℓ,h]`` (``N × N``, every head in
one link: heads act in parallel, so they add inside a link and never multiply as separate
links), ``M_in[ℓ]`` with Lipschitz factor ``ρ = L_φ`` (the activation follows it), ``M_out[ℓ]``
with ``ρ = 1``: 3L links. QK enters no link: it acts inside the softmax, and its Lipschitz factor
is in α of §4. With a reference (``--init``) every link is measured as ``A − A_0``.

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

CHAIN_NOTE = (
    "this project's layer chain (bounds.md section 6): per layer VO[l] = W_V W_O (all heads in one "
    "link), M_in[l] (rho = L_phi), M_out[l]; 3L links, QK in none (its Lipschitz factor is in alpha)"
)


def chain_links(inp: BoundInput) -> pd.DataFrame:
    """A copy of the chain's links (:attr:`MatrixTable.links`), checked: every link present and
    nonzero (a product of spectral norms over a zero link is 0, its log −inf)."""
    links = inp.table.links.copy()
    if len(links) == 0 or links["ln_spec"].isna().any():
        raise NotApplicable(
            "the spectra carry no value-path link VO = W_V W_O (built without it, e.g. by hand); "
            "recompute them with compute_spectra"
        )
    zero = links[~np.isfinite(links["ln_spec"].to_numpy())]
    if len(zero):
        r = zero.iloc[0]
        raise NotApplicable(
            f"{len(zero)} link(s) of the layer chain are zero (first: layer {r.layer} {r.kind}), so the "
            "product of spectral norms is 0 and its log is -inf"
        )
    return links


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
        "a feed-forward chain x -> sigma_L(A_L ... sigma_1(A_1 x)) with rho_i-Lipschitz activations; "
        "here this project's layer chain VO, M_in, M_out per layer",
        "leading complexity factor only: no margin, sample size, width log factor or constants",
    )
    needs = ("init?",)

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        df = chain_links(inp)
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
            "baseline: a feed-forward-chain bound applied to this project's layer chain",
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
        "a feed-forward ReLU chain (1-Lipschitz, positively homogeneous activations); here this "
        "project's layer chain VO, M_in, M_out per layer",
        "leading complexity factor only: no margin, depth/width factors, sample size or constants",
    )
    needs = ("init?",)

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        df = chain_links(inp)
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
            "baseline: a feed-forward-chain bound applied to this project's layer chain",
            CHAIN_NOTE,
            "no activation Lipschitz factor (the published bound is for ReLU)",
            f"log10 of the product of squared spectral norms: {ln_prod / LN10:.4f}",
        ] + inp.reference_notes("Frobenius norms")
        return self.result(inp, ln_prod + ln_sum, notes=notes, terms=terms,
                           params={"init": inp.reference_source, "chain_length": len(df)})


__all__ = ["BartlettSpectral", "NeyshaburPacBayes", "CHAIN_NOTE", "chain_links"]
