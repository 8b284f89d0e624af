"""Classic complexity measures as listed by Jiang et al. 2020 (Fantastic Generalization Measures
and Where to Find Them, ICLR 2020, Appendix C: norm- and parameter-based measures), labelled
``measure``. Jiang et al. define them for a chain of d weight matrices W_i; here the chain is this
project's layer chain (bounds.md §6, :attr:`~specbound.measures.MatrixTable.links`): per layer
VO[ℓ] = W_V W_O (all heads in one link), M_in[ℓ], M_out[ℓ], so d = 3L; the parameter count counts
the stored weights W_Q, W_K, W_V, W_O, M_in, M_out. Jiang et al. use natural logs; ``log10_value`` is the same
quantity in base 10 (divide by ln 10).

=================== =========================================================== ==============
name                value (``log10_value`` is its log10)                         homogeneity*
=================== =========================================================== ==============
``log_prod_spec``   Π_A ‖A‖_2²                                                   2·Σ_A deg A
``sum_fro``         d · (Π_A ‖A‖_F²)^{1/d}  (Jiang's rescaling-invariant sum)    2·mean deg A
``fro_over_spec``   Σ_A ‖A‖_F² / ‖A‖_2²  (sum of stable ranks)                   0
``param_count``     #entries of W_Q, W_K, W_V, W_O, M_in, M_out (every layer)    0
=================== =========================================================== ==============

(*) scaling every weight by c multiplies the value by c^k; deg VO = 2, deg M = 1.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from specbound.bounds.base import LN10, Bound, BoundInput, BoundParams, BoundResult, NotApplicable
from specbound.bounds.spectral_baselines import CHAIN_NOTE, chain_links
from specbound.measures import logsumexp

JIANG = "Y. Jiang, B. Neyshabur, H. Mobahi, D. Krishnan, S. Bengio. Fantastic Generalization Measures and Where to Find Them. ICLR 2020"
MATRICES_NOTE = CHAIN_NOTE


class _Classic(Bound):
    status = "measure"
    assumptions = ("defined for a feed-forward chain of weight matrices; here over this project's layer chain",)

    def _result(self, inp: BoundInput, ln_value: float, terms, notes: list[str], params: dict) -> BoundResult:
        return self.result(inp, ln_value, notes=notes, terms=terms, params=params)


class LogProdSpec(_Classic):
    name = "log_prod_spec"
    title = "Product of squared spectral norms (log: Jiang et al.'s log-prod-of-spec)"
    citation = f"{JIANG}, Appendix C (spectral measures: log product of spectral norms, after Bartlett et al. 2017)."

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        df = chain_links(inp)
        df["ln_term"] = 2.0 * df["ln_spec"]
        ln = float(df["ln_term"].sum())
        notes = [
            "measure: value = prod_A ||A||_2^2; Jiang et al.'s log-prod-of-spec is ln(value) = log10_value * ln 10",
            MATRICES_NOTE,
        ]
        return self._result(inp, ln, df[["layer", "head", "kind", "ln_spec", "ln_term"]], notes,
                            {"n_links": len(df), "ln_value": ln})


class SumFro(_Classic):
    name = "sum_fro"
    title = "Sum of squared Frobenius norms, rescaling-invariant form (Jiang et al.'s sum-of-fro)"
    citation = f"{JIANG}, Appendix C (Frobenius measures: sum of Frobenius norms, d·(prod_i ||W_i||_F^2)^(1/d))."

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        df = chain_links(inp)
        d = len(df)
        ln_f = df["ln_fro2"].to_numpy()
        if not np.isfinite(ln_f).all():
            raise NotApplicable("a link of the layer chain is zero, so the geometric mean of ||A||_F^2 is 0")
        ln = math.log(d) + float(ln_f.sum()) / d
        plain = logsumexp(ln_f)
        notes = [
            "measure: value = d * (prod_A ||A||_F^2)^(1/d), d = number of links (the sum of ||A||_F^2 "
            "minimised over rescalings that keep the function, as Jiang et al. define it)",
            f"plain sum of ||A||_F^2 (not rescaling-invariant): log10 = {plain / LN10:.4f}",
            MATRICES_NOTE,
        ]
        return self._result(inp, ln, df[["layer", "head", "kind", "ln_fro2"]], notes,
                            {"n_links": d, "log10_plain_sum": plain / LN10})


class FroOverSpec(_Classic):
    name = "fro_over_spec"
    title = "Sum of ||A||_F^2 / ||A||_2^2 (Jiang et al.'s fro/spec)"
    citation = f"{JIANG}, Appendix C (fro/spec: sum_i ||W_i||_F^2 / ||W_i||_2^2)."

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        try:
            df = chain_links(inp)
        except NotApplicable:
            df = inp.table.links.copy()  # zero links contribute 0 here (0/0 taken as 0)
            if len(df) == 0 or df["ln_spec"].isna().any():
                raise
        nz = np.isfinite(df["ln_spec"].to_numpy())
        if not nz.any():
            raise NotApplicable("every link of the layer chain is zero")
        df["ln_term"] = np.where(nz, df["ln_fro2"] - 2.0 * df["ln_spec"], -math.inf)
        ln = logsumexp(df["ln_term"].to_numpy())
        notes = ["measure: value = sum_A ||A||_F^2 / ||A||_2^2 (the sum of stable ranks); scale-invariant", MATRICES_NOTE]
        if (~nz).any():
            notes.append(f"{int((~nz).sum())} zero links contribute 0 (0/0 taken as 0)")
        return self._result(inp, ln, df[["layer", "head", "kind", "ln_term"]], notes, {"n_links": len(df)})


class ParamCount(_Classic):
    name = "param_count"
    title = "Number of parameters of the analysed weights"
    citation = f"{JIANG}, Appendix C (number of parameters)."

    def evaluate(self, inp: BoundInput, params: BoundParams) -> BoundResult:
        info = inp.info
        rows = []
        for ls in inp.layers:
            wn = ls.weight_norms
            if wn is not None:
                counts = dict(wn.params)
            else:  # from the sizes: W_K/W_V have H_kv heads as stored
                N, dh, H, Hkv = info.d_model, info.d_head, info.n_heads, info.n_kv_heads
                counts = {"W_Q": H * N * dh, "W_K": Hkv * N * dh, "W_V": Hkv * N * dh,
                          "W_O": H * dh * ls.ov[0].cols if ls.ov else 0,
                          "M_in": ls.m_in.rows * ls.m_in.cols, "M_out": ls.m_out.rows * ls.m_out.cols}
            for k, n in counts.items():
                rows.append({"layer": ls.layer, "weight": k, "params": int(n)})
        terms = pd.DataFrame(rows)
        total = int(terms["params"].sum())
        if total == 0:
            raise NotApplicable("no parameters")
        n_vec = sum(
            1 for ls in inp.layers if ls.weight_norms is not None for _ in ls.weight_norms.vectors
        )
        notes = [
            f"measure: {total:,} entries of W_Q, W_K, W_V, W_O (K/V counted per stored key/value head), "
            "M_in, M_out over all layers",
            f"not counted: biases and norm parameters ({n_vec} vectors in the layers), embeddings, heads",
        ]
        return self._result(inp, math.log(total), terms, notes, {"params": total})
