"""Effective-rank capacity of attention (after Dhingra 2025, arXiv 2508.17256), labelled as this
project's ``proxy``.

Dhingra (2025) measures capacity by the effective rank of attention rather than by parameter
count; the paper's exact definition and constant are not available to us (bounds.md §6). This
family reports, for every head h of every layer ℓ, the weight-side quantities

    stable rank   sr(A) = Σ_i σ_i² / σ_1²
    effective rank (Roy & Vetterli 2007)   er(A) = exp(−Σ_i q_i ln q_i),  q_i = σ_i / Σ_j σ_j

of A = QK[ℓ,h] and A = OV[ℓ,h], and aggregates them as THIS PROJECT'S proxy

    C_er = Σ_ℓ Σ_h ( er(QK[ℓ,h]) + er(OV[ℓ,h]) )

an "effective number of directions" used by attention (0 ≤ er ≤ d_h per matrix, so
C_er ≤ 2·L·H·d_h). It is invariant under orthogonal changes of the residual basis and under
scaling (degree 0). Zero matrices count 0. The data-side part of bounds.md §6 (effective rank
of the attention probability matrices on inputs) needs inputs and is not computed here.
"""

from __future__ import annotations

import math

import pandas as pd

from specbound.bounds.base import Bound, BoundInput, BoundParams, BoundResult, NotApplicable


class EffectiveRank(Bound):
    name = "effective_rank"
    title = "Effective-rank capacity of QK/OV (this project's proxy after Dhingra 2025)"
    citation = (
        "A. Dhingra. Provable Generalization in Overparameterized Neural Nets. arXiv 2508.17256 "
        "(2025) (capacity via the effective rank of attention; exact definition not available: "
        "aggregate is this project's construction); O. Roy, M. Vetterli, The effective rank, EUSIPCO 2007."
    )
    status = "proxy"
    assumptions = (
        "this project's proxy: sum over heads of the Roy-Vetterli effective ranks of QK and OV (weights only)",
        "no data: the attention-probability effective rank of the paper is not computed",
    )

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        f = inp.table.frame
        qk, ov = f[f["kind"] == "QK"], f[f["kind"] == "OV"]
        terms = pd.DataFrame({
            "layer": qk["layer"].to_numpy(), "head": qk["head"].to_numpy(),
            "effective_rank_QK": qk["effective_rank"].to_numpy(), "effective_rank_OV": ov["effective_rank"].to_numpy(),
            "stable_rank_QK": qk["stable_rank"].to_numpy(), "stable_rank_OV": ov["stable_rank"].to_numpy(),
        })
        total = float(terms["effective_rank_QK"].sum() + terms["effective_rank_OV"].sum())
        if total <= 0:
            raise NotApplicable("every QK and OV is zero, so the effective-rank capacity is 0")
        d_h = inp.info.d_head
        notes = [
            "proxy (this project's construction): C_er = sum over layers and heads of er(QK) + er(OV), "
            "Roy-Vetterli effective rank of the weights",
            f"mean effective rank per head: QK {terms['effective_rank_QK'].mean():.3f}, "
            f"OV {terms['effective_rank_OV'].mean():.3f} (maximum d_h = {d_h})",
            f"mean stable rank per head: QK {terms['stable_rank_QK'].mean():.3f}, OV {terms['stable_rank_OV'].mean():.3f}",
            "data-side effective rank of attention probabilities: not computed (needs inputs)",
        ]
        return self.result(inp, math.log(total), notes=notes, terms=terms,
                           params={"aggregate": "sum", "max_possible": 2 * len(terms) * d_h})
