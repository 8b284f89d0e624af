"""The pages of the experiments: ``OUT/report.html`` of ``specbound experiment sparse-majority``
(E1), ``scaling`` (E2), ``correlation`` (E3) and ``infinite-width`` (E4), and the notebook display
of their result objects.

The same machinery and look as ``report.html`` (:mod:`specbound.report.html`): one
:class:`~specbound.report.html.SectionRegistry` per experiment, rendered by
:func:`~specbound.report.html.page` into one self-contained file (plots are the PNGs the run
wrote, embedded as ``data:`` URIs; nothing on the network is referenced). Every page has the
sections ``run`` (what ran: the experiment, options, seed, wall time, cache reuse, versions and the
protocol deviations), the experiment's main tables, ``plots`` and ``skipped`` (what was not run,
failed or not evaluated, with reasons); the notebook display (``_repr_html_``) is the main tables
alone, without images or script.

This module reads the results duck-typed (DataFrames and the ``config.json`` dict); it imports no
experiment, so the experiments can import it for their ``_repr_html_``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specbound.report.html import (
    SectionRegistry,
    definition_list,
    esc,
    image,
    page,
    render_sections,
    table,
    write_html,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COMMANDS",
    "PAGE_NAME",
    "SECTIONS",
    "ExperimentContext",
    "adaptivity_line",
    "experiment_context",
    "experiment_page",
    "experiment_snippet",
    "short_repr",
    "write_experiment_page",
]

#: The file every experiment writes into its ``--out`` folder.
PAGE_NAME = "report.html"

#: command name → (experiment id, title of the page).
COMMANDS: dict[str, tuple[str, str]] = {
    "sparse-majority": ("E1", "E1 sparse majority (Trauger & Tewari 2024)"),
    "scaling": ("E2", "E2 growth of the bound proxies with depth and width (Sakai & Imaizumi 2026)"),
    "correlation": ("E3", "E3 which complexity measure tracks the generalisation gap?"),
    "infinite-width": ("E4", "E4 infinite-width limit of one attention layer (Sakai, Karakida & Imaizumi 2025)"),
}

#: One registry per command (filled below); an experiment adds a section with
#: ``SECTIONS["scaling"].register(id, title, order)``.
SECTIONS: dict[str, SectionRegistry] = {c: SectionRegistry() for c in COMMANDS}

#: The sections of the notebook display, per command (tables only: no images, no script).
SNIPPET_SECTIONS: dict[str, list[str]] = {
    "sparse-majority": ["by_T", "trends"],
    "scaling": ["models", "exponents"],
    "correlation": ["ranking"],
    "infinite-width": ["headline", "summary"],
}


@dataclass
class ExperimentContext:
    """What an experiment page reads. ``tables``: the result's DataFrames by name; ``config``: the
    dict written as ``config.json``; ``files``: the files the run wrote (PNG ones are embedded);
    ``extra``: experiment-specific values (E2: ``missing``, ``families``; E3: ``failed``)."""

    command: str
    tables: dict[str, pd.DataFrame]
    config: dict[str, Any]
    files: list[Path]
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def plots_drawn(self) -> bool:
        return any(f.suffix == ".png" for f in self.files)


def experiment_context(command: str, result: Any, out: str | os.PathLike | None = None) -> ExperimentContext:
    """The :class:`ExperimentContext` of ``result``, what the ``run_*`` function of ``command``
    returned: E1 and E3 a dict (``runs``/``trends`` or ``models``/``scores``, ``config``, ``files``),
    E2 a ``ScalingResult``, E4 a ``StudyResult``."""
    if command not in COMMANDS:
        raise ValueError(f"unknown experiment command {command!r}; one of {', '.join(COMMANDS)}")
    get = result.get if isinstance(result, dict) else lambda k, d=None: getattr(result, k, d)
    files = [Path(f) for f in (get("files") or [])]
    config = dict(get("config") or {})
    extra: dict[str, Any] = {}
    if command == "sparse-majority":
        tables = {"runs": get("runs"), "trends": get("trends")}
    elif command == "scaling":
        tables = {"models": get("models"), "exponents": get("exponents"), "norms": get("norms")}
        extra = {"missing": list(get("missing") or []), "families": list(get("families") or [])}
        out = out if out is not None else (config.get("config") or {}).get("out")
    elif command == "correlation":
        tables = {"models": get("models"), "scores": get("scores")}
        extra = {"failed": list(get("failed") or [])}
    else:
        tables = {"kl": get("kl"), "summary": get("summary")}
        extra = {"headline": dict(get("headline") or {})}
    if out is None and files:
        out = files[0].parent
    return ExperimentContext(command, tables, config, files, Path(out) if out is not None else None, extra)


# --------------------------------------------------------------------------- shared pieces


def frame_table(df: pd.DataFrame, columns: Sequence[str] | None = None, *, sortable: bool = True,
                css: str = "", text: Iterable[str] = ()) -> str:
    """``df[columns]`` as an HTML table: numeric columns right-aligned (and sorted as numbers),
    missing values as ``-``. Columns of ``columns`` that ``df`` lacks are left out."""
    import pandas as pd

    cols = [c for c in (columns if columns is not None else list(df.columns)) if c in df.columns]
    text = set(text)
    numeric = [c not in text and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in cols]
    rows = df[cols].astype(object).where(df[cols].notna(), None).itertuples(index=False)
    return table(cols, rows, sortable=sortable, numeric=numeric, css=css)


def _scroll(html: str) -> str:
    return f'<div class="scroll">{html}</div>'


def _num(v: Any, spec: str) -> str:
    if v is None:
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if math.isnan(f) else format(f, spec)


def _reused(config: dict[str, Any]) -> tuple[str, Any] | None:
    for key, what in (("runs_reused_from_cache", "runs"), ("models_reused_from_cache", "models"),
                      ("units_reused_from_cache", "units")):
        if key in config:
            total = config.get(f"{what}_total", config.get("units"))
            return (f"{what} from cache", f"{config[key]} of {total}" if total is not None
                    else config[key])
    return None


def _run_section(ctx: ExperimentContext) -> str:
    c = ctx.config
    facts: list[tuple[str, Any]] = []
    if ctx.out is not None:
        facts.append(("output folder", str(ctx.out)))
    if "seed" in c:
        facts.append(("seed", c["seed"]))
    if c.get("wall_time_seconds") is not None:
        facts.append(("wall time", f"{float(c['wall_time_seconds']):.1f} s"))
    if c.get("compute_seconds_total") is not None:
        facts.append(("compute, all units", f"{float(c['compute_seconds_total']):.1f} s"))
    r = _reused(c)
    if r is not None:
        facts.append(r)
    if c.get("torch_threads") is not None:
        facts.append(("torch threads", c["torch_threads"]))
    if c.get("execution"):
        facts.append(("execution", ", ".join(f"{k}={v}" for k, v in c["execution"].items() if v is not None)))
    if c.get("started_utc"):
        facts.append(("started (UTC)", c["started_utc"]))
    options = c.get("config") or {}
    out = [f'<p>{esc(c.get("experiment", COMMANDS[ctx.command][1]))}</p>',
           '<div class="cards"><div><h3>Run</h3>' + definition_list(facts) + "</div>",
           "<div><h3>Options</h3>" + definition_list((k, _short(v)) for k, v in options.items()) + "</div>",
           "<div><h3>Versions</h3>" + definition_list((c.get("versions") or {}).items()) + "</div></div>"]
    devs = list(c.get("deviations") or []) + list(c.get("quick_deviations") or [])
    if devs:
        out.append("<h3>Deviations from the protocol</h3><ul>" + "".join(f"<li>{esc(d)}</li>" for d in devs)
                   + "</ul>")
    return "".join(out)


def _short(v: object) -> str:
    s = str(v)
    return s if len(s) <= 200 else s[:197] + "..."


#: Embedded with their caption first, in this order; other PNGs follow (sorted by name).
_PLOT_TEXT: dict[str, str] = {
    "proxy_vs_N.png": "log10 of every proxy against the width N, one line per depth L.",
    "proxy_vs_L.png": "log10 of every proxy against the depth L, one line per width N.",
    "term_curves.png": "T(p)/T(0) over the grid P_m for every matrix of the featured model; dots mark p*.",
    "singular_values.png": "Singular-value decay of the featured model's matrices (first, middle, last layer).",
    "norms_vs_N.png": "Mean spectral, (2,1) and (1,1) norms per matrix kind against N.",
    "ranking.png": "Measures ranked by granulated Kendall τ with the accuracy gap.",
    "ranking_loss_gap.png": "Measures ranked by granulated Kendall τ with the loss gap.",
}

#: E3 draws one scatter plot per measure: the first few (by rank) are shown, the rest folded.
SCATTERS_SHOWN = 6


def _png(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data[:8] == b"\x89PNG\r\n\x1a\n" else None


def _figure(path: Path, caption: str | None) -> str:
    png = _png(path)
    if png is None:
        return f'<p class="note">{esc(path.name)}: listed as written but cannot be read as a PNG.</p>'
    cap = f'<p class="muted">{esc(caption)}</p>' if caption else ""
    return f"<figure><figcaption class=\"mono\">{esc(path.name)}</figcaption>{cap}{image(png, path.stem)}</figure>"


def _plots_section(ctx: ExperimentContext) -> str:
    pngs = [f for f in ctx.files if f.suffix == ".png"]
    if not pngs:
        return '<p class="muted">Plots not drawn (--no-plots / plots=False).</p>'
    order = {n: i for i, n in enumerate(_PLOT_TEXT)}
    pngs.sort(key=lambda f: (order.get(f.name, len(order)), str(f)))
    if ctx.command == "correlation":
        return _correlation_plots(ctx, pngs)
    return "".join(_figure(f, _PLOT_TEXT.get(f.name)) for f in pngs)


def _files_section(ctx: ExperimentContext) -> str:
    names = [str(f.relative_to(ctx.out)) if ctx.out is not None and f.is_relative_to(ctx.out) else str(f)
             for f in ctx.files]
    return ('<p class="muted">Written beside this page (every table in full, as CSV/JSON):</p><ul class="mono">'
            + "".join(f"<li>{esc(n)}</li>" for n in names) + "</ul>")


def _register_common(reg: SectionRegistry, skipped: Callable[[ExperimentContext], str]) -> None:
    reg.register("run", "Run", order=10)(_run_section)
    reg.register("plots", "Plots", order=60)(_plots_section)
    reg.register("skipped", "Not run, failed, not evaluated", order=90)(skipped)
    reg.register("files", "Files", order=95)(_files_section)


def adaptivity_line(models: Any) -> str | None:
    """One line on B_SA's adaptivity over the models (bounds.md §4): the range of
    ``frac_p_star_zero`` and of the median scale margin; ``None`` without those columns."""
    if models is None or "frac_p_star_zero" not in getattr(models, "columns", ()):
        return None
    fr = models["frac_p_star_zero"].astype(float)
    mg = models["median_log10_scale_margin"].astype(float)
    n_inactive = int((fr == 1.0).sum())

    def rng(x: Any, spec: str) -> str:
        x = x.dropna()
        return "n/a" if x.empty else f"{format(x.min(), spec)} .. {format(x.max(), spec)} (median {format(x.median(), spec)})"

    return (f"B_SA (spectrum_adaptive) adaptivity: inactive (every p* = 0) in {n_inactive} of {len(models)} models; "
            f"frac_p_star_zero {rng(fr, '.3f')}; median log10 scale margin {rng(mg, '.2f')} decades "
            f"(columns frac_p_star_zero, median_log10_scale_margin of models.csv)")


def _adaptivity_note(models: Any) -> str:
    line = adaptivity_line(models)
    return "" if line is None else f'<p class="note">{esc(line)}</p>'


# --------------------------------------------------------------------------- E1 sparse majority

E1 = SECTIONS["sparse-majority"]


@E1.register("by_T", "Runs by sequence length T", order=20)
def _e1_by_T(ctx: ExperimentContext) -> str:
    runs = ctx.tables["runs"]
    g = runs.groupby("T")
    import pandas as pd

    by = pd.DataFrame({"runs": g.size(), "stopped at cap": g["stopped_at_cap"].sum().astype(int),
                       "reached train acc": g["reached_train_acc"].mean(), "test acc": g["test_acc"].mean(),
                       "acc gap": g["acc_gap"].mean(), "loss gap": g["loss_gap"].mean(),
                       "l1 all variables": g["l1_sum_all_variables"].mean()}).reset_index()
    n_cap = int(runs["stopped_at_cap"].sum())
    out = [f"<p>{len(runs)} runs; means over the seeds of each T.</p>"]
    if n_cap:
        out.append(f'<p class="note">{n_cap} of {len(runs)} runs stopped at the epoch cap '
                   f'({esc((ctx.config.get("config") or {}).get("max_epochs", "?"))}) before 100% training '
                   "accuracy; the trends are given over all runs and over the fitted runs only.</p>")
    return "".join(out) + frame_table(by)


@E1.register("trends", "Slope against log2 T (per doubling), 95% interval", order=30)
def _e1_trends(ctx: ExperimentContext) -> str:
    trends = ctx.tables["trends"]
    main = (["acc_gap", "loss_gap", "test_acc", "l1_sum_all_variables", "l1_sum_weights_only"]
            + list(ctx.config.get("bound_columns") or []) + ["frac_p_star_zero", "median_log10_scale_margin"])
    quantities = list(dict.fromkeys(trends["quantity"]))
    rest = [q for q in quantities if q not in main]
    cols = ["quantity", "mean", "slope (all)", "95% CI (all)", "slope (fitted)", "95% CI (fitted)", "n fitted"]
    numeric = [False, True, True, False, True, False, True]

    def rows(qs: list[str]) -> list[tuple[Any, ...]]:
        out = []
        for q in qs:
            sub = trends[trends["quantity"] == q].set_index("runs")
            if not {"all", "fitted"} <= set(sub.index):
                continue
            a, f = sub.loc["all"], sub.loc["fitted"]
            out.append((q, a["mean"], a["slope_per_doubling"],
                        f"[{_num(a['ci_low'], '+.3g')}, {_num(a['ci_high'], '+.3g')}]", f["slope_per_doubling"],
                        f"[{_num(f['ci_low'], '+.3g')}, {_num(f['ci_high'], '+.3g')}]", int(f["n"])))
        return out

    html = ('<p class="muted">l1_sum_all_variables: Trauger &amp; Tewari\'s tracked quantity (every trainable '
            "variable, biases included); log10_*: the bound proxies at T + 1 tokens; frac_p_star_zero, "
            "median_log10_scale_margin: B_SA's adaptivity (bounds.md §4). Every column in trends.csv.</p>"
            + table(cols, rows([q for q in main if q in quantities]), sortable=True, numeric=numeric))
    if rest:
        html += (f"<details><summary>The other {len(rest)} quantities (per-variable norms, training record)"
                 "</summary>" + table(cols, rows(rest), sortable=True, numeric=numeric) + "</details>")
    return html


@E1.register("runs", "Every run", order=40)
def _e1_runs(ctx: ExperimentContext) -> str:
    runs = ctx.tables["runs"]
    cols = [c for c in ("T", "seed", "epochs", "stopped_at_cap", "reached_train_acc", "train_acc", "test_acc",
                        "acc_gap", "loss_gap", "l1_sum_all_variables", "l1_sum_weights_only") if c in runs.columns]
    cols += [c for c in runs.columns if c.startswith("log10_")]
    return ('<p class="muted">Click a header to sort; every column in runs.csv.</p>'
            + _scroll(frame_table(runs, cols, css="mono")))


def _e1_skipped(ctx: ExperimentContext) -> str:
    runs, c = ctx.tables["runs"], ctx.config
    out = []
    capped = runs[runs["stopped_at_cap"].astype(bool)]
    if len(capped):
        out.append(f"<h3>Runs stopped at the epoch cap ({len(capped)})</h3>"
                   + frame_table(capped, ["T", "seed", "epochs", "reached_train_acc"], sortable=False))
    if not c.get("bounds_available", True):
        out.append(f'<p class="note">Bound proxies not evaluated: {esc(c.get("bounds_missing_reason", ""))}</p>')
    if not ctx.plots_drawn:
        out.append("<p>Plots not drawn (--no-plots).</p>")
    return "".join(out) or "<p>Every run of the plan ran and reached 100% training accuracy; every bound proxy " \
                           "was evaluated.</p>"


_register_common(E1, _e1_skipped)


# --------------------------------------------------------------------------- E2 scaling

E2 = SECTIONS["scaling"]


@E2.register("models", "Models: log10 of every proxy", order=20)
def _e2_models(ctx: ExperimentContext) -> str:
    m = ctx.tables["models"]
    fams = ctx.extra.get("families") or [c[len("log10_"):] for c in m.columns if c.startswith("log10_")]
    cols = ["name", "L", "N", "H", "n_matrices"] + [f"log10_{f}" for f in fams] + [
        "log10_sa_p0_cap", "mean_p_star", "frac_p_star_zero", "median_log10_scale_margin",
        "heldout_masked_ce", "unigram_masked_ce", "train_seconds", "reused"]
    return ('<p class="muted">B_SA is spectrum_adaptive, B_E edelman; log10_sa_p0_cap: B_SA if every p* were 0 '
            "(an upper bound on B_SA that ignores the weight values). Proxies, not calibrated bounds. Every "
            f"column in models.csv. Featured model (per-matrix plots): "
            f"{esc(ctx.config.get('featured_model', 'n/a'))}.</p>" + _adaptivity_note(m)
            + _scroll(frame_table(m, cols, css="mono", text=("name", "reused"))))


@E2.register("exponents", "Growth exponents: slope of log10 proxy (95% t interval)", order=30)
def _e2_exponents(ctx: ExperimentContext) -> str:
    ex = ctx.tables["exponents"]
    if ex is None or ex.empty:
        return "<p>No exponents: the grid has no two models sharing L or N.</p>"
    rows = []
    for r in ex.itertuples(index=False):
        at = "pooled" if r.fixed == "all" else f"{r.fixed}={int(r.fixed_value)}"
        has_ci = r.ci_low is not None and r.ci_low == r.ci_low
        ci = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if has_ci else f"n/a ({r.n_points} points)"
        rows.append((r.family, r.x, at, r.n_points, r.slope, ci))
    return ('<p class="muted">Against log10_N: the exponent of N at fixed L; against L: decades per layer at '
            "fixed N; pooled: log10 proxy = c + a·log10 N + b·L over the whole grid. The intervals are OLS over "
            "single checkpoints (one model per grid point): they measure lack of fit, not sampling error.</p>"
            + _scroll(table(["family", "against", "at", "n", "slope", "95% interval"], rows, sortable=True,
                            numeric=[False, False, False, True, True, False])))


@E2.register("norms", "Norms per matrix kind", order=40)
def _e2_norms(ctx: ExperimentContext) -> str | None:
    n = ctx.tables.get("norms")
    if n is None or n.empty:
        return None
    return _scroll(frame_table(n, css="mono", text=("name", "kind")))


def _e2_skipped(ctx: ExperimentContext) -> str:
    out = []
    missing = ctx.extra.get("missing") or []
    if missing:
        out.append(f"<h3>Models not analysed ({len(missing)})</h3>"
                   + table(["name", "source", "reason"], [(m.get("name", ""), m.get("source", ""), m.get("reason", ""))
                                                          for m in missing], css="mono"))
    ne = ctx.config.get("not_evaluated") or []
    if ne:
        out.append("<h3>Bound families not evaluated</h3>"
                   + table(["family", "reason"], [(x.get("bound", ""), x.get("reason", "")) for x in ne]))
    return "".join(out) or "<p>Every model of the grid was analysed and every bound family evaluated.</p>"


_register_common(E2, _e2_skipped)


# --------------------------------------------------------------------------- E3 correlation

E3 = SECTIONS["correlation"]

_SCORE_COLUMNS = ["rank", "measure", "kendall_tau", "kendall_tau_b", "granulated_tau_mean", "granulated_tau_mean_se",
                  "robust_sign_error_max", "robust_sign_error_p90", "robust_sign_error_mean", "n_environments",
                  "sign_error_unweighted", "n_models"]


@E3.register("ranking", "Measures ranked by granulated Kendall τ with the accuracy gap", order=20)
def _e3_ranking(ctx: ExperimentContext) -> str:
    s = ctx.tables["scores"]
    gap = s[s["target"] == "gap"]
    return ('<p class="muted">τ-a: Kendall τ-a over all models (Jiang et al. 2020 eq. 2; τ-b beside it); '
            "granulated τ: mean over axes of τ-a over every one-axis group (± approximate standard error); robust "
            "sign error: Dziugaite et al. 2020, max / 90th percentile / mean over environments; unweighted: plain "
            "mean over coupled pairs. *_n_adj: adjusted for n_train. Click a header to sort.</p>"
            + _adaptivity_note(ctx.tables["models"]) + _scroll(frame_table(gap, _SCORE_COLUMNS, text=("measure",))))


@E3.register("loss_gap", "Scores against the loss gap", order=30)
def _e3_loss_gap(ctx: ExperimentContext) -> str | None:
    s = ctx.tables["scores"]
    other = s[s["target"] != "gap"]
    if other.empty:
        return None
    return _scroll(frame_table(other, ["target"] + _SCORE_COLUMNS, text=("measure", "target")))


@E3.register("models", "Models: hyper-parameters and gaps", order=40)
def _e3_models(ctx: ExperimentContext) -> str:
    m = ctx.tables["models"]
    cols = [c for c in m.columns if not c.startswith("log10_")]
    n_meas = sum(c.startswith("log10_") for c in m.columns)
    return (f'<p class="muted">The {n_meas} measures (log10_*) of every model are in models.csv.</p>'
            + _scroll(frame_table(m, cols, css="mono")))


def _correlation_plots(ctx: ExperimentContext, pngs: list[Path]) -> str:
    scatters = [f for f in pngs if f.name.startswith("scatter_")]
    others = [f for f in pngs if f not in scatters]
    s = ctx.tables["scores"]
    rank = {m: i for i, m in enumerate(s[s["target"] == "gap"].sort_values("rank")["measure"])}

    def key(f: Path) -> tuple[int, str]:
        stem = f.stem[len("scatter_"):]
        hits = [i for m, i in rank.items() if stem in (m, f"log10_{m}", m.replace("log10_", ""))]
        return (min(hits) if hits else len(rank), f.name)

    scatters.sort(key=key)
    shown, folded = scatters[:SCATTERS_SHOWN], scatters[SCATTERS_SHOWN:]
    out = [_figure(f, _PLOT_TEXT.get(f.name)) for f in others]
    if shown:
        out.append(f"<h3>Measure against the gap: the {len(shown)} best ranked</h3>")
        out += [_figure(f, None) for f in shown]
    if folded:
        out.append(f"<details><summary>The other {len(folded)} scatter plots</summary>"
                   + "".join(_figure(f, None) for f in folded) + "</details>")
    return "".join(out)


def _e3_skipped(ctx: ExperimentContext) -> str:
    out = []
    failed = ctx.extra.get("failed") or []
    if failed:
        out.append(f"<h3>Models that failed ({len(failed)})</h3>"
                   + table(["model", "error"], [tuple(f) for f in failed], css="mono"))
    ne = ctx.config.get("measures_not_evaluated") or {}
    if ne:
        rows = [(mid, x.get("bound", ""), x.get("reason", "")) for mid, items in ne.items() for x in items]
        out.append(f"<h3>Measures not evaluated ({len(rows)})</h3>"
                   + _scroll(table(["model", "family", "reason"], rows, css="mono")))
    ns = ctx.config.get("not_scored") or []
    if ns:
        out.append(f"<p>Recorded but not scored: {esc(', '.join(ns))} (B_SA's adaptivity diagnostic).</p>")
    if not failed and not ne:
        out.insert(0, "<p>Every model of the sweep trained and every measure was evaluated.</p>")
    return "".join(out)


_register_common(E3, _e3_skipped)


# --------------------------------------------------------------------------- E4 infinite width

E4 = SECTIONS["infinite-width"]
_SHORT = {"n_sweep": "n", "H_sweep": "H", "relu_n_sweep": "relu", "lowrank_H_sweep": "lowrank"}
_ALL_SWEEPS = tuple(_SHORT)


def _e4_headline_lines(headline: dict[str, Any]) -> list[str]:
    lines = []
    for exp, h in headline.items():
        sl = h["slope_kl_to_limit"]
        if h["axis"] == "n":
            lines.append(f"{exp}: KL(finite ‖ limit) ∝ n^{_num(sl['slope'], '.2f')} (95% CI "
                         f"[{_num(sl['ci_low'], '.2f')}, {_num(sl['ci_high'], '.2f')}], {sl['points']} points)")
        else:
            g = h["slope_kl_limit_to_gaussian"]
            res_h = [f"H={p['H']}: {'yes' if p['kl_limit_to_gaussian_resolved'] else 'no'}"
                     for p in h["per_H"] if p["H"] <= 4]
            lines.append(f"{exp}: KL(limit ‖ N) ∝ H^{_num(g['slope'], '.2f')} (95% CI [{_num(g['ci_low'], '.2f')}, "
                         f"{_num(g['ci_high'], '.2f')}]); resolved above the floor: {', '.join(res_h)}")
    return lines


@E4.register("headline", "Headline", order=20)
def _e4_headline(ctx: ExperimentContext) -> str:
    lines = _e4_headline_lines(ctx.extra.get("headline") or {})
    if not lines:
        return "<p>No sweep ran.</p>"
    return "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"


@E4.register("summary", "KL in nats, mean over seeds", order=30)
def _e4_summary(ctx: ExperimentContext) -> str:
    s = ctx.tables["summary"]
    rows = [(_SHORT.get(r.experiment, r.experiment), r.n, r.H, r.n_seeds, r.kl_to_limit_mean, r.kl_to_limit_sd,
             r.kl_limit_to_gaussian_mean, r.kl_to_gaussian_mean, r.floor_mean) for r in s.itertuples(index=False)]
    est = (ctx.config.get("config") or {}).get("kl", "")
    return (f'<p class="muted">fin = finite width, lim = the infinite-width limit, N = N(0, σ²∞); sd over seeds; '
            f"floor: the estimator's floor (two independent limit draws); estimator: {esc(est)}. Every column in "
            "summary.csv, every seed in kl.csv.</p>"
            + table(["sweep", "n", "H", "seeds", "KL(fin‖lim)", "sd", "KL(lim‖N)", "KL(fin‖N)", "floor"], rows,
                    sortable=True, numeric=[False] + [True] * 8))


def _e4_skipped(ctx: ExperimentContext) -> str:
    ran = tuple((ctx.config.get("config") or {}).get("experiments") or ())
    not_run = [e for e in _ALL_SWEEPS if e not in ran]
    out = []
    if not_run:
        out.append("<p>Sweeps not run (--sweeps): " + esc(", ".join(f"{_SHORT[e]} ({e})" for e in not_run))
                   + ".</p>")
    if not ctx.plots_drawn:
        out.append("<p>Plots not drawn (--no-plots).</p>")
    return "".join(out) or "<p>Every sweep ran; plots drawn.</p>"


_register_common(E4, _e4_skipped)


# --------------------------------------------------------------------------- pages


def _subtitle(ctx: ExperimentContext) -> str:
    c = ctx.config
    v = (c.get("versions") or {}).get("specbound", "")
    bits = [COMMANDS[ctx.command][0]]
    if ctx.command == "sparse-majority":
        runs = ctx.tables["runs"]
        bits.append(f"{len(runs)} runs, T in {{{', '.join(str(int(t)) for t in sorted(runs['T'].unique()))}}}")
    elif ctx.command == "scaling":
        m = ctx.tables["models"]
        bits.append(f"{len(m)} models ({(c.get('config') or {}).get('family', '')})")
    elif ctx.command == "correlation":
        bits.append(f"{len(ctx.tables['models'])} models ({(c.get('config') or {}).get('task', '')})")
    else:
        bits.append(f"{c.get('units', len(ctx.tables['kl']))} (sweep, seed) units")
    if (c.get("config") or {}).get("quick"):
        bits.append("--quick")
    bits.append(f"specbound {v}")
    return " · ".join(bits)


def experiment_page(command: str, result: Any, out: str | os.PathLike | None = None) -> str:
    """The whole ``report.html`` of an experiment run (``command``: ``sparse-majority``,
    ``scaling``, ``correlation`` or ``infinite-width``; ``result``: what its ``run_*`` returned)."""
    ctx = experiment_context(command, result, out)
    return page(f"specbound experiment {command}", f"{COMMANDS[command][1]} · {_subtitle(ctx)}",
                render_sections(SECTIONS[command], ctx),
                footer=f"Written by specbound experiment {command}. Self-contained: no network resource is "
                       "referenced.")


def write_experiment_page(command: str, result: Any, out: str | os.PathLike) -> Path:
    """Write the page of ``result`` to ``out/report.html`` (atomically); return its path."""
    return write_html(experiment_page(command, result, out), Path(out) / PAGE_NAME)


def experiment_snippet(command: str, result: Any) -> str:
    """The notebook display of a result: one line, then the main tables (no images, no script)."""
    ctx = experiment_context(command, result)
    body = "".join(f"<h4>{esc(t)}</h4>{b}" for _, t, b in render_sections(SECTIONS[command], ctx,
                                                                           only=SNIPPET_SECTIONS[command]))
    where = f" · {esc(ctx.out)}/{PAGE_NAME}" if ctx.out is not None else ""
    return (f'<div class="specbound-experiment"><p><b>{esc(COMMANDS[command][1])}</b><br>'
            f"{esc(_subtitle(ctx))}{where}</p>{body}</div>")


def short_repr(command: str, result: Any) -> str:
    """A few lines: what ran and its headline numbers (not the dataclass dump)."""
    ctx = experiment_context(command, result)
    c = ctx.config
    name = "result" if type(result) is dict else type(result).__name__
    lines = [f"<specbound {name}: {_subtitle(ctx)}"]
    if ctx.command == "scaling":
        ex = ctx.tables["exponents"]
        for fam, short in (("spectrum_adaptive", "B_SA"), ("edelman", "B_E")):
            pooled = ex[(ex["family"] == fam) & (ex["fixed"] == "all")] if not ex.empty else ex
            if len(pooled):
                parts = [f"{_num(r.slope, '.3f')} per {'log10 N' if r.x == 'log10_N' else 'layer'}"
                         for r in pooled.itertuples(index=False)]
                lines.append(f"  {short} pooled slope: {', '.join(parts)}")
        if ctx.extra.get("missing"):
            lines.append(f"  {len(ctx.extra['missing'])} models missing")
    elif ctx.command == "correlation":
        s = ctx.tables["scores"]
        top = s[s["target"] == "gap"].sort_values("rank").head(3)
        for r in top.itertuples(index=False):
            lines.append(f"  #{r.rank} {r.measure}: granulated τ {_num(r.granulated_tau_mean, '+.3f')}, "
                         f"τ-a {_num(r.kendall_tau, '+.3f')}")
        if ctx.extra.get("failed"):
            lines.append(f"  {len(ctx.extra['failed'])} models failed")
    elif ctx.command == "infinite-width":
        lines += [f"  {line}" for line in _e4_headline_lines(ctx.extra.get("headline") or {})]
    else:
        runs = ctx.tables["runs"]
        lines.append(f"  {int(runs['stopped_at_cap'].sum())} of {len(runs)} runs stopped at the epoch cap")
    if c.get("wall_time_seconds") is not None:
        lines.append(f"  wall time {float(c['wall_time_seconds']):.1f} s" + (f"; {ctx.out}" if ctx.out else ""))
    return "\n".join(lines) + ">"
