"""Per-matrix norms in log space, shared by the norm-based families (bounds.md §3, §6).

One row per analysed matrix ``A`` (every QK[ℓ,h], OV[ℓ,h], M_in[ℓ], M_out[ℓ], in the order of
``ModelSpectra.matrices()``), natural logs (``-inf`` for a zero norm):

    ln_spec  = ln σ_1(A)            ln_fro2 = ln Σ_i σ_i² = ln ‖A‖_F²        ln_21 = ln ‖A‖_{2,1}

With a reference (``params.reference``, the spectra of ``A − A_0``) the ``ln_d_*`` columns hold
the same norms of the difference; without one they equal the norms of ``A`` (distance to 0).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from specbound.bounds.base import BoundParams, NotApplicable, logsumexp, safe_log
from specbound.spectra.model import ModelSpectra


def _ln_fro2(s: np.ndarray) -> float:
    return logsumexp(2.0 * safe_log(s[s > 0])) if (s > 0).any() else -math.inf


def matrix_norms(spectra: ModelSpectra, params: BoundParams | None = None) -> pd.DataFrame:
    """The table of the module docstring (columns layer, head, kind, rows, cols, ln_spec, ln_fro2,
    ln_21, ln_d_spec, ln_d_fro2, ln_d_21, reference).

    Several families read it for one model: it is built once per (spectra, reference) and kept
    on the :class:`ModelSpectra` (``memo``, not pickled); each call gets its own copy.
    """
    ref = params.reference if params is not None else None
    hit = spectra.memo.get(("matrix_norms", id(ref)))
    if hit is not None and hit[0] is ref:  # the reference is held with the table: its id stays its own
        return hit[1].copy()
    df = _matrix_norms(spectra, ref)
    spectra.memo[("matrix_norms", id(ref))] = (ref, df)
    return df.copy()


def _matrix_norms(spectra: ModelSpectra, ref: ModelSpectra | None) -> pd.DataFrame:
    rows = []
    for layer, head, kind, ms in spectra.matrices():
        s = ms.values.double().numpy()
        row = {
            "layer": layer, "head": head, "kind": kind, "rows": ms.rows, "cols": ms.cols,
            "ln_spec": float(safe_log(s[0])) if s.size else -math.inf,
            "ln_fro2": _ln_fro2(s),
            "ln_21": float(safe_log(ms.norm_21)),
        }
        if ref is not None:
            d = ref.matrix(layer, head, kind)
            ds = d.values.double().numpy()
            row.update(
                ln_d_spec=float(safe_log(ds[0])) if ds.size else -math.inf,
                ln_d_fro2=_ln_fro2(ds),
                ln_d_21=float(safe_log(d.norm_21)),
            )
        else:
            row.update(ln_d_spec=row["ln_spec"], ln_d_fro2=row["ln_fro2"], ln_d_21=row["ln_21"])
        rows.append(row)
    df = pd.DataFrame(rows)
    df["reference"] = ref is not None
    return df


def require_nonzero_spectral(df: pd.DataFrame, family: str) -> None:
    """:class:`NotApplicable` when a matrix is zero (a product of spectral norms would be 0, log −inf)."""
    zero = df[~np.isfinite(df["ln_spec"].to_numpy())]
    if len(zero):
        r = zero.iloc[0]
        raise NotApplicable(
            f"{len(zero)} analysed matrix/matrices are zero (first: layer {r.layer} head "
            f"{r.head} {r.kind}), so the product of spectral norms is 0 and its log is -inf"
        )


def reference_notes(params: BoundParams, what: str) -> list[str]:
    """The note saying whether distances are to a reference checkpoint or to zero."""
    if params.reference is not None:
        return [f"{what} measured as distances A - A_0 to the reference checkpoint {params.init_source}"]
    return [f"{what} measured from zero (no reference checkpoint; pass --init / init= for distances to initialisation)"]
