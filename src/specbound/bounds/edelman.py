"""Norm-based comparison proxy B_E (Edelman, Goel, Kakade & Zhang 2022), as adapted to
multi-head BERT in Sakai & Imaizumi (2026), bounds.md §5:

    ξ[ℓ] = Σ_h [ (C_2(M_out)·C_2(M_in)·C_2(OV[ℓ,h])·‖QK[ℓ,h]‖_{2,1})^{2/3}
               + (C_2(M_out)·C_2(M_in)·‖OV[ℓ,h]‖_{2,1})^{2/3} ]
           + (C_2(M_out[ℓ])·‖M_in[ℓ]‖_{2,1})^{2/3} + ‖M_out[ℓ]‖_{2,1}^{2/3}

    B_E = ( 1 + Σ_ℓ α[ℓ]^{2/3} · ξ[ℓ] )^{3/2}

with α as in the spectrum-adaptive proxy. The log T sequence-length factor and the 1/sqrt(n)
sample factor of the original bound are omitted, as in the paper's comparison.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from specbound.bounds.base import Bound, BoundInput, BoundParams, BoundResult, NotApplicable
from specbound.measures import logsumexp

TWO_THIRDS = 2.0 / 3.0


def ln_xi_terms(inp: BoundInput) -> pd.DataFrame:
    """One row per summand of ξ[ℓ] (layer, head, kind, ln of the summand, ln α[ℓ]), in table order."""
    t = inp.table
    spec_in, spec_out, spec_ov = t.values("ln_spec", "M_in"), t.values("ln_spec", "M_out"), t.values("ln_spec", "OV")
    f = t.frame
    rows = []
    for layer, head, kind, n21, ln_alpha in zip(f["layer"], f["head"], f["kind"], f["ln_21"], f["ln_alpha"]):
        ln_ff = spec_out[layer] + spec_in[layer]  # ln C_2(M_out) + ln C_2(M_in)
        if kind == "QK":
            ln = ln_ff + spec_ov[layer, head] + n21
        elif kind == "OV":
            ln = ln_ff + n21
        elif kind == "M_in":
            ln = spec_out[layer] + n21
        else:
            ln = n21
        rows.append({"layer": layer, "head": head, "kind": kind, "ln_summand": TWO_THIRDS * float(ln),
                     "ln_alpha": float(ln_alpha)})
    return pd.DataFrame(rows)


class Edelman(Bound):
    name = "edelman"
    title = "Norm-based proxy B_E (Edelman et al. 2022)"
    citation = (
        "B. Edelman, S. Goel, S. Kakade, C. Zhang. Inductive Biases and Variable Creation in "
        "Self-Attention Mechanisms. ICML 2022 (arXiv 2110.10090); multi-head BERT form as used "
        "in Sakai & Imaizumi 2026, Section 6."
    )
    status = "proxy"
    assumptions = (
        "post-norm Transformer with Lipschitz activation",
        "the log T sequence-length factor and the 1/sqrt(n) sample factor are omitted",
    )

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        terms = ln_xi_terms(inp)
        terms["ln_weighted"] = TWO_THIRDS * terms["ln_alpha"] + terms["ln_summand"]
        ln_sum = logsumexp(terms["ln_weighted"].to_numpy())
        ln_inner = float(np.logaddexp(0.0, ln_sum))
        ln_total = 1.5 * ln_inner
        notes = [
            "proxy: log T sequence-length factor, 1/sqrt(n), margin and constants omitted",
            f"L_phi = {params.l_phi} (enters through alpha)",
        ]
        return self.result(inp, ln_total, notes=notes, terms=terms, params={"l_phi": params.l_phi})


class EdelmanSeqLen(Bound):
    """B_E with the sequence-length factor of Edelman et al. (2022).

    Their covering bounds (Theorem 4.1 for one head; the multi-layer bound of Section 4 in the
    same form) read ``log N_∞(F; ε; X_1..X_m) ≲ C² · log(mT) / ε²`` (m samples of T tokens: the
    cover is over m·T points), where C is the norm complexity whose multi-layer form is B_E. By
    Dudley's integral the Rademacher complexity, hence the generalisation gap, carries
    ``C · sqrt(log(mT)) / sqrt(m)`` (up to a log m). With the sample size omitted, as in §5::

        B_E,T = B_E · sqrt(ln T)            (T ≥ 2, natural log)

    The theorem number (4.1, the single-head covering bound) is taken from a secondary summary of
    arXiv 2110.10090; the log(mT) form of the covering bound is what the factor rests on.
    """

    name = "edelman_seq_len"
    title = "Norm-based proxy with its sequence-length factor, B_E * sqrt(ln T) (Edelman et al. 2022)"
    citation = (
        "B. Edelman, S. Goel, S. Kakade, C. Zhang. Inductive Biases and Variable Creation in "
        "Self-Attention Mechanisms. ICML 2022 (arXiv 2110.10090), Theorem 4.1 and its multi-layer "
        "extension (Section 4): log covering number ~ C^2 log(mT)/eps^2, so the gap carries sqrt(log(mT))."
    )
    status = "proxy"
    assumptions = (
        "post-norm Transformer with Lipschitz activation; inputs of at most T tokens",
        "sample size m omitted (inside the log and the 1/sqrt(m) factor), as are margin and constants",
    )
    needs = ("seq_len",)

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        T = params.seq_len
        if T is None or T < 2:
            raise NotApplicable(f"needs a sequence length T >= 2 (--seq-len), got {T}")
        base = Edelman().evaluate(inp, params)
        ln_factor = 0.5 * math.log(math.log(T))
        notes = [
            f"proxy: B_E * sqrt(ln T) with T = {T} (factor {math.exp(ln_factor):.4g}); Edelman et al.'s "
            "log(mT) with the sample size m omitted, as are 1/sqrt(n), margin and constants",
            f"L_phi = {params.l_phi} (enters through alpha)",
        ] + inp.architecture_notes()
        return BoundResult(
            name=self.name,
            log10_value=base.log10_value + ln_factor / math.log(10),
            status=self.status,
            citation=self.citation,
            notes=notes,
            terms=base.terms,
            params={"l_phi": params.l_phi, "seq_len": T, "log10_B_E": base.log10_value},
        )
