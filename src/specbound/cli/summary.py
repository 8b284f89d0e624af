"""The summary ``specbound analyze`` prints for one checkpoint: the model line, the bound
families, one row per layer, the notes, and where the report went."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from specbound.cli.console import out

__all__ = ["print_summary"]


def _fmt(v: float | None, log10: float) -> str:
    return f"{v:.4g}" if v is not None else f"10^{log10:.2f}"


def print_summary(report: Any, written: list[Path], out_dir: Path | None) -> None:
    """Print the summary of ``report`` (a :class:`specbound.Report`) and the files ``written``."""
    m = report.model
    out.print(
        f"[bold]{m.model_type}[/]  L={m.n_layers}  N={m.d_model}  H={m.n_heads}  H_kv={m.n_kv_heads}  "
        f"d_h={m.d_head}  d_ff={m.d_ff}  ({m.source})",
        highlight=False,
    )
    t = Table(title="Bound families (proxies, baselines, measures: not calibrated bounds; see `specbound bounds`)",
              title_justify="left")
    for col in ("family", "value", "log10", "status"):
        t.add_column(col, justify="right" if col in ("value", "log10") else "left")
    for name, b in report.bounds.items():
        t.add_row(name, _fmt(b.value, b.log10_value), f"{b.log10_value:.4f}", b.status)
    out.print(t)
    for ne in getattr(report, "not_evaluated", []):
        out.print(f"[yellow]not evaluated[/] {ne['bound']}: {escape(ne['reason'])}", highlight=False)
    note = report.adaptivity.get("note")
    if note:
        style = "yellow" if report.adaptivity.get("adaptivity") == "inactive" else "green"
        head, _, rest = note.partition(": ")
        out.print(f"[{style}]{head}[/]: {escape(rest)}", highlight=False)

    mat = report.matrices
    lt = Table(
        title="Per layer: mean p* of the heads, largest σ1 (C_2), log10 α, max rank QK/OV",
        title_justify="left",
    )
    for col in ("layer", "p*QK", "p*OV", "p*in", "p*out", "σ1 QK", "σ1 OV", "σ1 in", "σ1 out",
                "log10 α", "rank"):
        lt.add_column(col, justify="right", no_wrap=True)
    # plain lists per column (one pass; pandas selections per layer cost ~0.1 s on BERT-base)
    cols = {c: mat[c].tolist() for c in ("layer", "kind", "p_star", "spectral_norm", "log10_alpha", "rank")}
    by_layer: dict[int, dict[str, list[int]]] = {}
    for i, (layer, kind) in enumerate(zip(cols["layer"], cols["kind"])):
        by_layer.setdefault(layer, {}).setdefault(kind, []).append(i)
    for layer in sorted(by_layer):
        g = by_layer[layer]

        def col(c: str, kind: str) -> list[Any]:
            return [cols[c][i] for i in g.get(kind, [])]

        mi, mo = g["M_in"][0], g["M_out"][0]
        lt.add_row(
            str(layer), f"{_mean(col('p_star', 'QK')):.2f}", f"{_mean(col('p_star', 'OV')):.2f}",
            f"{cols['p_star'][mi]:.2f}", f"{cols['p_star'][mo]:.2f}", f"{_max(col('spectral_norm', 'QK')):.3g}",
            f"{_max(col('spectral_norm', 'OV')):.3g}", f"{cols['spectral_norm'][mi]:.3g}",
            f"{cols['spectral_norm'][mo]:.3g}", f"{cols['log10_alpha'][mi]:.2f}",
            f"{int(_max(col('rank', 'QK')))}/{int(_max(col('rank', 'OV')))}",
        )
    out.print(lt)
    notes = [n for n in m.notes]
    for n in notes:
        out.print(f"[yellow]note[/] {n.code}: {escape(n.message)}", highlight=False)
    na = report.not_analysed
    if na:
        n_params = sum(_prod(x["shape"]) for x in na)
        out.print(
            f"Not analysed (outside the proxies: embeddings, biases, norms, heads): {len(na)} tensors, "
            f"{n_params:,} parameters; listed in not_analysed.csv / report.json.",
            highlight=False,
        )
    out.print(f"Analysed {len(mat)} matrices in {report.elapsed_s:.2f} s.", highlight=False)
    if out_dir is not None:
        out.print(f"Report written to [bold]{out_dir}[/]", highlight=False)
    for p in written:
        if out_dir is None or p.parent != out_dir:
            out.print(f"Wrote {p}", highlight=False)


def _mean(values: list[Any]) -> float:
    """Mean as pandas' ``Series.mean`` computes it (NaN skipped: numpy sum / count)."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None and x == x], dtype=np.float64)
    return float(v.sum() / v.size) if v.size else float("nan")


def _max(values: list[Any]) -> float:
    """Max as pandas' ``Series.max`` computes it (NaN skipped)."""
    v = [x for x in values if x is not None and x == x]
    return max(v) if v else float("nan")


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
