"""Trauger & Tewari 2024 (Sequence Length Independent Norm-Based Generalization Bounds for
Transformers, AISTATS 2024, arXiv 2310.13088): their tracked quantities, and a TT-style proxy
that is THIS PROJECT'S construction.

Their covering-number lemmas control each linear map W by the entrywise norm
``‖W‖_{1,1} = Σ_ij |W_ij|`` (inputs bounded in ‖·‖_∞ / ‖·‖_2), with spectral norms propagating
Lipschitz constants through the layers, which removes the log T of Edelman et al. Their
simulation tracks the entrywise ℓ1 norm of every weight and their sum.

``trauger_tewari_l11`` (``measure``, exactly their tracked quantity)::

    V_11 = Σ_ℓ ( ‖W_Q[ℓ]‖_{1,1} + ‖W_K[ℓ]‖_{1,1} + ‖W_V[ℓ]‖_{1,1} + ‖W_O[ℓ]‖_{1,1}
               + ‖M_in[ℓ]‖_{1,1} + ‖M_out[ℓ]‖_{1,1} )

over the stored weights (K/V once per key/value head); biases and norm parameters are listed
in the term table (``in_sum`` False) and their sums in ``params``, outside V_11.

``trauger_tewari_proxy`` (``proxy``, THIS PROJECT'S construction — the exact final formula of
Trauger & Tewari is not available to us, bounds.md §6): Edelman's composition (bounds.md §5,
with the same α and within-layer factors) with every (2,1) norm replaced by the entrywise
(1,1) norm of the weights that their lemmas cover; for the bilinear/product maps we use
``‖W_Q W_Kᵀ‖_{1,1} ≤ ‖W_Q‖_{1,1}·‖W_K‖_{1,1}`` (and likewise for OV), so no product is formed::

    ξ¹[ℓ] = Σ_h [ (C_2(M_out)·C_2(M_in)·C_2(OV[ℓ,h])·‖W_Q[ℓ,h]‖_{1,1}·‖W_K[ℓ,g(h)]‖_{1,1})^{2/3}
                + (C_2(M_out)·C_2(M_in)·‖W_V[ℓ,g(h)]‖_{1,1}·‖W_O[ℓ,h]‖_{1,1})^{2/3} ]
          + (C_2(M_out[ℓ])·‖M_in[ℓ]‖_{1,1})^{2/3} + ‖M_out[ℓ]‖_{1,1}^{2/3}

    B_TT = ( 1 + Σ_ℓ α[ℓ]^{2/3} · ξ¹[ℓ] )^{3/2}          (no sequence-length factor)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from specbound.bounds.base import Bound, BoundInput, BoundParams, BoundResult, NotApplicable
from specbound.measures import logsumexp

TT = (
    "J. Trauger, A. Tewari. Sequence Length Independent Norm-Based Generalization Bounds for "
    "Transformers. AISTATS 2024 (PMLR 238), arXiv 2310.13088"
)
TWO_THIRDS = 2.0 / 3.0
WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out")


def _require_norms(inp: BoundInput) -> None:
    if any(ls.weight_norms is None for ls in inp.layers):
        raise NotApplicable(
            "the spectra carry no weight-level (1,1) norms (built without the weights, "
            "e.g. loaded from an older cache); recompute them from the checkpoint"
        )


class TraugerTewariL11(Bound):
    name = "trauger_tewari_l11"
    title = "Sum of entrywise (1,1) norms of every weight (Trauger & Tewari's tracked quantity)"
    citation = f"{TT}; the entrywise l1 norms tracked in their sparse-majority simulation (Section 5)."
    status = "measure"
    assumptions = (
        "measure of the weights: W_Q, W_K, W_V, W_O, M_in, M_out as stored (K/V once per key/value head)",
        "biases and norm parameters reported separately, outside the sum",
    )

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        _require_norms(inp)
        rows = []
        for ls in inp.layers:
            wn = ls.weight_norms
            for k in ("W_Q", "W_K", "W_V", "W_O"):
                for h, v in enumerate(wn.heads[k]):
                    rows.append({"layer": ls.layer, "head": h, "weight": k, "label": "weight", "l11": v, "in_sum": True})
            for k in ("M_in", "M_out"):
                rows.append({"layer": ls.layer, "head": -1, "weight": k, "label": "weight", "l11": wn.totals[k], "in_sum": True})
            for name, (label, v) in wn.vectors.items():
                rows.append({"layer": ls.layer, "head": -1, "weight": name, "label": label, "l11": v, "in_sum": False})
        terms = pd.DataFrame(rows)
        inside = terms[terms["in_sum"]]
        total = float(inside["l11"].sum())
        if total <= 0:
            raise NotApplicable("every weight is zero, so the sum of (1,1) norms is 0")
        by_weight = {k: float(inside.loc[inside["weight"] == k, "l11"].sum()) for k in WEIGHTS}
        outside = terms[~terms["in_sum"]]
        by_label = {lab: float(outside.loc[outside["label"] == lab, "l11"].sum()) for lab in ("bias", "norm", "other")}
        notes = [
            "measure: sum over layers of ||W||_{1,1} of W_Q, W_K, W_V, W_O, M_in, M_out (Trauger & Tewari's tracked quantity)",
            "per weight: " + ", ".join(f"{k} {v:.4g}" for k, v in by_weight.items()),
            "outside the sum: l1 of biases {bias:.4g}, of norm parameters {norm:.4g}, of other vectors {other:.4g}".format(**by_label),
            "not orthogonally invariant: (1,1) norms depend on the residual basis",
        ]
        return self.result(inp, math.log(total), notes=notes, terms=terms,
                           params={"per_weight": by_weight, **{f"l1_{k}": v for k, v in by_label.items()}})


class TraugerTewariProxy(Bound):
    name = "trauger_tewari_proxy"
    title = "TT-style sequence-length-independent proxy (this project's construction)"
    citation = (
        f"{TT}; covering lemmas for (1,1)-bounded linear maps with spectral-norm Lipschitz propagation. "
        "The combined formula is THIS PROJECT'S construction from their lemma structure (their exact "
        "final formula is not available to us); composition as in Edelman et al. 2022 / bounds.md section 5."
    )
    status = "proxy"
    assumptions = (
        "this project's construction: Edelman's composition with (1,1) norms of the weights in place of (2,1) norms",
        "post-norm Transformer with an L_phi-Lipschitz activation; no sequence-length factor",
        "leading complexity factors only: no sample size, margin, delta, constants or log factors",
    )

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        _require_norms(inp)
        t = inp.table
        spec_in, spec_out, spec_ov = t.values("ln_spec", "M_in"), t.values("ln_spec", "M_out"), t.values("ln_spec", "OV")
        f = t.frame
        rows = []
        for layer, head, kind, ln_l11, ln_alpha in zip(f["layer"], f["head"], f["kind"], f["ln_l11"], f["ln_alpha"]):
            ln_ff = float(spec_out[layer] + spec_in[layer])
            if kind == "QK":
                ln = ln_ff + float(spec_ov[layer, head]) + ln_l11
            elif kind == "OV":
                ln = ln_ff + ln_l11
            elif kind == "M_in":
                ln = float(spec_out[layer]) + ln_l11
            else:
                ln = ln_l11
            rows.append({"layer": layer, "head": head, "kind": kind, "ln_l11": float(ln_l11),
                         "ln_summand": TWO_THIRDS * ln, "ln_alpha": float(ln_alpha)})
        terms = pd.DataFrame(rows)
        terms["ln_weighted"] = TWO_THIRDS * terms["ln_alpha"] + terms["ln_summand"]
        ln_total = 1.5 * float(np.logaddexp(0.0, logsumexp(terms["ln_weighted"].to_numpy())))
        notes = [
            "proxy, THIS PROJECT'S construction from Trauger & Tewari's lemma structure (their exact final "
            "formula is not available): B_TT = (1 + sum_l alpha_l^(2/3) xi1_l)^(3/2), xi1 = Edelman's xi with "
            "(1,1) norms of the weights (||W_Q||_11 ||W_K||_11 for QK, ||W_V||_11 ||W_O||_11 for OV)",
            "no sequence-length factor (Trauger & Tewari's point); no n, margin, delta or constants",
            f"L_phi = {params.l_phi} (enters through alpha; spectral norms C_2 propagate Lipschitz constants)",
        ]
        return self.result(inp, ln_total, notes=notes, terms=terms, params={"l_phi": params.l_phi})
