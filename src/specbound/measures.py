"""Per-matrix measures of ``bounds.md`` §3 and the one table that holds them all.

The functions take the singular values ``s`` of one matrix (descending, float64 numpy array;
listed values only — the exact zeros of a factored spectrum contribute nothing to any of these,
except through ``r`` in the rank threshold) and return a float. Conventions for the zero matrix
(σ_1 = 0): rank 0, stable rank 0, effective rank 0, every log ``-inf``.

:class:`MatrixTable` is built once per analysis from the spectra and is what every bound family
reads (``bounds.md`` §3–§6): one row per analysed matrix, keyed by ``(layer, head, kind)``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from specbound.spectra.spectrum import ModelSpectra

#: The relative threshold of the numerical rank in float64 (``bounds.md`` §3).
RANK_RTOL = 1e-10
#: Machine epsilon of float64, the precision ``bounds.md`` §3's threshold is stated for.
EPS64 = float(np.finfo(np.float64).eps)


def rank_rtol(eps: float = EPS64) -> float:
    """The relative threshold of :func:`numerical_rank` for a working precision of machine epsilon
    ``eps``: ``max(1e-10, ε)``. In float64 (ε = 2.2e-16) it is ``bounds.md`` §3's 1e-10 exactly;
    in float32 (ε = 1.2e-7) a singular value must exceed ``ε · r · max(σ_1, 1)``, the rounding
    noise of a float32 spectrum (about ``ε·σ_1`` for each "zero" value), where 1e-10 would count
    the noise as rank."""
    return max(RANK_RTOL, float(eps))


def rank_threshold(s1: float, r: int, eps: float = EPS64, gram_n: int = 0) -> float:
    """The value a singular value must exceed to count in the numerical rank.

    ``rank_rtol(eps) · r · max(σ_1, 1)`` (``bounds.md`` §3 with the working precision's ε); for
    values from the Gram route (``gram_n`` = the Gram matrix's order n), also the Gram route's
    resolution: its eigenvalues carry an absolute error of about ``n·ε₆₄·λ_max`` (the Gram matrix
    is accumulated in float64 for every working dtype), so a "zero" singular value comes out as
    up to ``√(n·ε₆₄)·σ_1``; the threshold is then at least ``4·√(n·ε₆₄)·σ_1``. The accuracy guard
    of the ``auto`` route accepts the Gram route only when every value is far above this, so the
    term matters only for ``ff_method="gram"`` on rank-deficient matrices.
    """
    t = rank_rtol(eps) * r * max(s1, 1.0)
    if gram_n:
        t = max(t, 4.0 * math.sqrt(gram_n * EPS64) * s1)
    return t


def spectral_norm(s: np.ndarray) -> float:
    """``C_2(A) = σ_1``."""
    return float(s[0]) if s.size else 0.0


def frobenius(s: np.ndarray) -> float:
    """``(Σ σ_i²)^{1/2}``, scaled by σ_1 (``σ_1 · (Σ (σ_i/σ_1)²)^{1/2}``) so that it is finite
    whenever the true value is (the squares of σ_i ≈ 1e300 overflow; their sum need not)."""
    if s.size == 0:
        return 0.0
    top = float(np.max(s))
    if top == 0.0 or not math.isfinite(top):
        return top
    return top * float(np.sqrt(np.sum((s / top) ** 2)))


def nuclear(s: np.ndarray) -> float:
    """``Σ σ_i``."""
    return float(np.sum(s))


def numerical_rank(s: np.ndarray, r: int, eps: float = EPS64, gram_n: int = 0) -> int:
    """``S_0(A) = #{σ_i > rank_rtol(ε) · r · max(σ_1, 1)}`` with ``r = min(rows, cols)`` and ``ε``
    the working precision's machine epsilon (float64: ``bounds.md`` §3's 1e-10 exactly;
    :func:`rank_threshold`, which also takes the Gram route's resolution for ``gram_n > 0``)."""
    if s.size == 0:
        return 0
    return int(np.count_nonzero(s > rank_threshold(float(s[0]), r, eps, gram_n)))


def spectrum_rank(ms) -> int:  # type: ignore[no-untyped-def]
    """:func:`numerical_rank` of a :class:`~specbound.spectra.spectrum.MatrixSpectrum`: ``ε`` of the
    dtype its values were computed in (the working dtype), and the Gram route's resolution when
    its ``method`` is ``gram``."""
    import torch

    s = ms.values.double().cpu().numpy()
    eps = float(torch.finfo(ms.values.dtype).eps) if ms.values.dtype.is_floating_point else EPS64
    return numerical_rank(s, ms.r, eps, ms.r if str(ms.method) == "gram" else 0)


def log_schatten(s: np.ndarray, p: float) -> float:
    """``ln S_p(A) = ln Σ σ_i^p`` for ``p > 0`` (``-inf`` for the zero matrix), in log space.

    Computed as a log-sum-exp of ``p ln σ_i`` so it neither overflows nor underflows.
    """
    if p <= 0:
        raise ValueError("log_schatten takes p > 0; S_0 is the numerical rank")
    pos = s[s > 0]
    if pos.size == 0:
        return -math.inf
    x = p * np.log(pos)
    m = float(x.max())
    return m + math.log(float(np.exp(x - m).sum()))


def log_schatten_grid(s: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """:func:`log_schatten` for every ``p`` of ``ps`` (all ``> 0``) at once: ``[len(ps)]``."""
    ps = np.asarray(ps, dtype=np.float64)
    if ps.size and float(ps.min()) <= 0:
        raise ValueError("log_schatten_grid takes p > 0; S_0 is the numerical rank")
    pos = s[s > 0]
    if pos.size == 0:
        return np.full(ps.shape, -math.inf)
    x = np.multiply.outer(ps, np.log(pos))  # [P, k]
    m = x.max(axis=1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))


def schatten(s: np.ndarray, p: float, r: int | None = None) -> float:
    """``S_p(A) = Σ σ_i^p`` (p > 0; a quasi-norm power for p < 1); ``S_0`` = numerical rank."""
    if p == 0:
        return float(numerical_rank(s, r if r is not None else s.size))
    return float(np.sum(s[s > 0] ** p))


def stable_rank(s: np.ndarray) -> float:
    """``Σ σ_i² / σ_1²`` (0 for the zero matrix)."""
    if s.size == 0 or s[0] == 0:
        return 0.0
    return float(np.sum((s / s[0]) ** 2))


def effective_rank(s: np.ndarray) -> float:
    """Roy & Vetterli (2007): ``exp(−Σ q_i ln q_i)`` with ``q_i = σ_i / Σ σ_j`` (0 for zero matrix)."""
    total = float(np.sum(s))
    if total <= 0:
        return 0.0
    q = s[s > 0] / total
    return float(math.exp(-float(np.sum(q * np.log(q)))))


def safe_log(x: np.ndarray | float) -> np.ndarray:
    """Natural log with ``log 0 = -inf`` and no warning (inputs are ≥ 0)."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, dtype=np.float64))


def logsumexp(x: np.ndarray) -> float:
    """``ln Σ exp(x)`` over the finite entries; ``-inf`` when there are none."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return -math.inf
    m = float(x.max())
    return m + math.log(float(np.exp(x - m).sum()))


def log_frobenius2(s: np.ndarray) -> float:
    """``ln ‖A‖_F² = ln Σ σ_i²`` (``-inf`` for the zero matrix), in log space."""
    return logsumexp(2.0 * safe_log(s[s > 0])) if (s > 0).any() else -math.inf


def ln_alpha(spectra: "ModelSpectra", l_phi: float) -> np.ndarray:
    """``ln α[ℓ]`` of ``bounds.md`` §4, ``[L]``; the last layer has α = 1.

    α[ℓ] = Π_{k>ℓ} L_φ · C_2(M_in[k]) · C_2(M_out[k]) · Σ_h C_2(OV[k,h]) · (1 + 4 C_2(QK[k,h]))
    """
    c2 = spectra.spectral_norms()
    per_layer = (
        math.log(l_phi)
        + safe_log(c2["M_in"])
        + safe_log(c2["M_out"])
        + _ln_head_sum(c2["OV"], c2["QK"])
    )  # [L]: ln of the factor contributed by layer k
    L = per_layer.size
    out = np.zeros(L)
    for ell in range(L - 2, -1, -1):
        out[ell] = out[ell + 1] + per_layer[ell + 1]
    return out


def _ln_head_sum(ov: np.ndarray, qk: np.ndarray) -> np.ndarray:
    """``ln Σ_h C_2(OV[h]) · (1 + 4 C_2(QK[h]))`` per layer (``[L, H]`` → ``[L]``): the product in
    linear space when it is finite (bit for bit the direct formula), else in log space
    (a log-sum-exp of ``ln C_2(OV) + ln(1 + 4 C_2(QK))``), so large norms never overflow."""
    with np.errstate(over="ignore"):
        direct = np.sum(ov * (1.0 + 4.0 * qk), axis=1)
    out = safe_log(direct)
    bad = ~np.isfinite(direct)
    if bad.any():
        ln_qk = safe_log(qk[bad])
        ln_term = safe_log(ov[bad]) + np.logaddexp(0.0, math.log(4.0) + ln_qk)
        out[bad] = [logsumexp(row) for row in ln_term]
    return out


def ln_gammas(spectra: "ModelSpectra") -> dict[str, np.ndarray]:
    """``ln γ*`` per kind (``bounds.md`` §4): QK ``2·C_2(OV)·C_2(M_out)·C_2(M_in)``, OV
    ``C_2(M_out)·C_2(M_in)`` (``[L, H]``), M_in ``C_2(M_out)``, M_out 1 (``[L]``)."""
    c2 = spectra.spectral_norms()
    ln_in, ln_out = safe_log(c2["M_in"]), safe_log(c2["M_out"])
    ff = (ln_in + ln_out)[:, None]
    return {
        "QK": math.log(2.0) + safe_log(c2["OV"]) + ff,
        "OV": np.broadcast_to(ff, c2["OV"].shape).copy(),
        "M_in": ln_out.copy(),
        "M_out": np.zeros_like(ln_out),
    }


#: Columns of :attr:`MatrixTable.frame`, in order; see :class:`MatrixTable`.
TABLE_COLUMNS = [
    "layer", "head", "kind", "rows", "cols", "r", "rank", "spectral_norm", "frobenius", "nuclear",
    "stable_rank", "effective_rank", "norm_21", "ln_spec", "ln_fro2", "ln_21", "ln_d_spec",
    "ln_d_fro2", "ln_d_21", "ln_l11", "ln_gamma", "ln_alpha", "method", "approximate", "tensors",
]
KEY = ["layer", "head", "kind"]

#: Columns of :attr:`MatrixTable.links` (this project's layer chain, ``bounds.md`` §6).
LINK_COLUMNS = ["layer", "head", "kind", "rows", "cols", "ln_rho", "ln_spec", "ln_fro2", "ln_21", "ln_d_spec",
                "ln_d_fro2", "ln_d_21"]
#: The links of one layer in chain order.
LINK_KINDS = ("VO", "M_in", "M_out")


class MatrixTable:
    """Every per-matrix quantity of an analysis, one row per matrix, keyed by ``(layer, head, kind)``.

    Rows are in the order of :meth:`ModelSpectra.matrices` (layer by layer: QK[ℓ, 0..H−1],
    OV[ℓ, 0..H−1], M_in[ℓ], M_out[ℓ]; ``head`` −1 for the feed-forward matrices). Columns
    (:data:`TABLE_COLUMNS`; logs are natural, ``-inf`` for a zero norm):

    ========================= ===================================================================
    ``rows``, ``cols``, ``r``  shape (row-vector orientation) and ``r = min(rows, cols)``
    ``rank``                   numerical rank ``S_0`` (:func:`numerical_rank`)
    ``spectral_norm`` …        ``σ_1``, ``‖A‖_F``, ``‖A‖_*``, stable rank, effective rank (§3)
    ``norm_21``                ``‖A‖_{2,1} = Σ_j ‖A[:, j]‖₂``
    ``ln_spec``, ``ln_fro2``,  ``ln σ_1``, ``ln ‖A‖_F²``, ``ln ‖A‖_{2,1}``
    ``ln_21``
    ``ln_d_*``                 the same norms of ``A − A_0`` for a reference (``--init``); equal to
                               ``ln_*`` (distance to 0) without one (``reference`` says which)
    ``ln_l11``                 QK: ``ln ‖W_Q[h]‖_{1,1} + ln ‖W_K[g(h)]‖_{1,1}``; OV: ``ln ‖W_V[g(h)]‖_{1,1}
                               + ln ‖W_O[h]‖_{1,1}``; M: ``ln ‖M‖_{1,1}`` (NaN without weight norms)
    ``ln_gamma``, ``ln_alpha`` ``ln γ*(A)`` and ``ln α[ℓ]`` of §4 (α with the given ``L_φ``)
    ``method``, ``approximate`` how the spectrum was obtained; whether it is an estimate
    ``tensors``                the stored tensors (and head slices) the matrix was formed from
                               (:func:`tensor_label`)
    ========================= ===================================================================

    :attr:`links` is this project's layer chain (``bounds.md`` §6), read by the product-type
    baselines and classic measures: per layer, in order, ``VO[ℓ] = W_V W_O`` (all heads in one
    link), ``M_in[ℓ]`` (``ln_rho = ln L_φ``), ``M_out[ℓ]``; QK enters no link. Columns
    (:data:`LINK_COLUMNS`, keyed like the matrices with ``head`` −1): ``ln_spec``, ``ln_fro2``,
    ``ln_21`` and the distances ``ln_d_*`` as above; NaN for a VO link the spectra do not carry.
    """

    def __init__(self, frame: "pd.DataFrame", reference: bool = False, links: "pd.DataFrame | None" = None):
        self.frame = frame
        self.reference = reference
        if links is None:
            import pandas as pd

            links = pd.DataFrame(columns=LINK_COLUMNS)
        self.links = links

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def build(cls, spectra: "ModelSpectra", *, l_phi: float, reference: "ModelSpectra | None" = None) -> "MatrixTable":
        """The table of ``spectra``; ``reference``: the spectra of the differences ``A − A_0``."""
        import pandas as pd

        la = ln_alpha(spectra, l_phi)
        lg = ln_gammas(spectra)
        g = spectra.info.kv_index().numpy()
        rows = []
        for layer, head, kind, ms in spectra.matrices():
            s = ms.values.double().numpy()
            wn = spectra.layers[layer].weight_norms
            row = {
                "layer": layer, "head": head, "kind": kind, "rows": ms.rows, "cols": ms.cols, "r": ms.r,
                "rank": spectrum_rank(ms), "spectral_norm": spectral_norm(s), "frobenius": frobenius(s),
                "nuclear": nuclear(s), "stable_rank": stable_rank(s), "effective_rank": effective_rank(s),
                "norm_21": ms.norm_21,
                "ln_spec": float(safe_log(s[0])) if s.size else -math.inf,
                "ln_fro2": log_frobenius2(s),
                "ln_21": float(safe_log(ms.norm_21)),
                "ln_l11": math.nan if wn is None else _ln_l11(wn, kind, head, g),
                "ln_gamma": float(lg[kind][layer, head] if head >= 0 else lg[kind][layer]),
                "ln_alpha": float(la[layer]),
                "method": ms.method,
                "approximate": ms.approximate,
                "tensors": tensor_label(spectra.layers[layer].names, kind, head, int(g[head]) if head >= 0 else -1,
                                        spectra.info.d_head, spectra.info.d_model),
            }
            if reference is not None:
                d = reference.matrix(layer, head, kind)
                ds = d.values.double().numpy()
                row.update(ln_d_spec=float(safe_log(ds[0])) if ds.size else -math.inf,
                           ln_d_fro2=log_frobenius2(ds), ln_d_21=float(safe_log(d.norm_21)))
            else:
                row.update(ln_d_spec=row["ln_spec"], ln_d_fro2=row["ln_fro2"], ln_d_21=row["ln_21"])
            rows.append(row)
        frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        return cls(frame, reference=reference is not None, links=_links(spectra, frame, l_phi, reference))

    def values(self, column: str, kind: str) -> np.ndarray:
        """``column`` of the matrices of ``kind`` as an array: ``[L, H]`` for QK/OV, ``[L]`` for M_in/M_out."""
        sel = self.frame[self.frame["kind"] == kind]
        v = sel[column].to_numpy()
        if kind in ("QK", "OV"):
            return v.reshape(sel["layer"].nunique(), -1)
        return v

    def zero_matrices(self) -> "pd.DataFrame":
        """The rows whose matrix is zero (``σ_1 = 0``)."""
        return self.frame[~np.isfinite(self.frame["ln_spec"].to_numpy())]


def _link_logs(link) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    if link is None:
        return math.nan, math.nan, math.nan
    return (float(safe_log(link.spectral_norm)), 2.0 * float(safe_log(link.frobenius)), float(safe_log(link.norm_21)))


def _links(spectra: "ModelSpectra", frame: "pd.DataFrame", l_phi: float, reference: "ModelSpectra | None"
           ) -> "pd.DataFrame":
    """:attr:`MatrixTable.links`: VO from the value-path links, M_in/M_out from the matrix rows."""
    import pandas as pd

    ff = frame[frame["kind"].isin(["M_in", "M_out"])].set_index(["layer", "kind"])
    rows = []
    for ls in spectra.layers:
        for kind in LINK_KINDS:
            row: dict = {"layer": ls.layer, "head": -1, "kind": kind,
                         "ln_rho": math.log(l_phi) if kind == "M_in" else 0.0}
            if kind == "VO":
                row["rows"], row["cols"] = (ls.vo.rows, ls.vo.cols) if ls.vo is not None else (0, 0)
                row["ln_spec"], row["ln_fro2"], row["ln_21"] = _link_logs(ls.vo)
                d = _link_logs(reference.layers[ls.layer].vo) if reference is not None else None
            else:
                r = ff.loc[(ls.layer, kind)]
                row.update(rows=int(r["rows"]), cols=int(r["cols"]), ln_spec=r["ln_spec"], ln_fro2=r["ln_fro2"],
                           ln_21=r["ln_21"])
                d = (r["ln_d_spec"], r["ln_d_fro2"], r["ln_d_21"]) if reference is not None else None
            row["ln_d_spec"], row["ln_d_fro2"], row["ln_d_21"] = d if d is not None else (
                row["ln_spec"], row["ln_fro2"], row["ln_21"])
            rows.append(row)
    return pd.DataFrame(rows, columns=LINK_COLUMNS)


def _ln_l11(wn, kind: str, head: int, g: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    if kind == "QK":
        return float(safe_log(wn.heads["W_Q"][head]) + safe_log(wn.heads["W_K"][g[head]]))
    if kind == "OV":
        return float(safe_log(wn.heads["W_V"][g[head]]) + safe_log(wn.heads["W_O"][head]))
    return float(safe_log(wn.totals[kind]))


#: Joins the factors of a product (``QK = W_Q W_Kᵀ``, ``OV = W_V W_O``) in :func:`tensor_label`;
#: the tensors of one concatenated matrix (a gated ``M_in``) keep ``NAME_SEPARATOR`` (`` | ``).
PRODUCT_SEPARATOR = " · "
_TAIL_SLICE = re.compile(r"^(?P<name>.*?)\[:, *(?P<a>[^:\]]*):(?P<b>[^\]]*)\]$")


def _offset(expr: str, n: int) -> int:
    """``""`` → 0, ``"N"`` → n, ``"2N"`` → 2n, ``"64"`` → 64 (the adapters' column slices)."""
    expr = expr.strip()
    if not expr:
        return 0
    if expr.endswith("N"):
        return int(expr[:-1] or 1) * n
    return int(expr)


def _head_slice(name: str, head: int, d_head: int, n: int, *, output: bool, conv1d: bool) -> str:
    """``name`` restricted to one head's ``d_h`` rows/columns, in the stored tensor's indices."""
    a, b = head * d_head, (head + 1) * d_head
    m = _TAIL_SLICE.match(name)
    if m is not None:  # a column block of a fused tensor (GPT-2's c_attn): offset inside it
        off = _offset(m["a"], n)
        return f"{m['name']}[:, {off + a}:{off + b}]"
    if output:  # W_O: nn.Linear [N, H·d_h] → columns; Conv1D [H·d_h, N] → rows
        return f"{name}[{a}:{b}]" if conv1d else f"{name}[:, {a}:{b}]"
    return f"{name}[:, {a}:{b}]" if conv1d else f"{name}[{a}:{b}]"


def tensor_label(names: dict[str, str], kind: str, head: int, kv_head: int, d_head: int, n: int) -> str:
    """The stored tensors one matrix was formed from, as the adapters name them (``names``:
    :attr:`LayerSpectra.names`), with the head's slice in the stored tensor's own indices:
    QK ``W_Q[h] · W_K[g(h)]``, OV ``W_V[g(h)] · W_O[h]``, ``M_in`` / ``M_out`` the tensor(s) as
    named (a gated ``M_in``: ``gate | up``). E.g. BERT layer 0 head 0 (``d_h`` = 32):
    ``encoder.layer.0.attention.self.query.weight[0:32] · encoder.layer.0.attention.self.key.weight[0:32]``.

    The layout is read from the names: a Q/K/V name ending in a column slice ``[:, a:b]`` (GPT-2's
    fused ``c_attn``, a ``conv1d`` mapping) is a ``Conv1D`` layer (``[in, out]``); otherwise
    ``nn.Linear`` (``[out, in]``). Empty when the names are unknown.
    """
    def get(key: str) -> str:
        return names.get(key, "").removesuffix(" - reference")

    if kind in ("M_in", "M_out"):
        return get(kind)
    conv1d = _TAIL_SLICE.match(get("W_Q")) is not None
    if kind == "QK":
        parts = [(get("W_Q"), head, False), (get("W_K"), kv_head, False)]
    else:
        parts = [(get("W_V"), kv_head, False), (get("W_O"), head, True)]
    if not all(p[0] for p in parts):
        return ""
    return PRODUCT_SEPARATOR.join(_head_slice(nm, h, d_head, n, output=o, conv1d=conv1d) for nm, h, o in parts)
