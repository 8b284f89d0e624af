"""E2 study: :func:`run_scaling` analyses every model of a grid and writes the tables, the
fits and the plots (see :mod:`specbound.experiments.scaling`)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from specbound.errors import InputError
from specbound.experiments.common import versions, write_csv_atomic, write_text_atomic
from specbound.experiments.scaling import grid
from specbound.experiments.scaling import synthetic as synth
from specbound.experiments.scaling.fits import fit_exponents
from specbound.spectra.spectrum import KINDS

#: ``progress(message, done, total)``: the library never prints; the CLI draws a bar from this.
Progress = Callable[[str, int, int], None]

@dataclass
class ScalingConfig:
    """Options of one E2 run (see :func:`run_scaling`)."""

    family: str = "synthetic"
    out: Path = Path("specbound-e2")
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    l_phi: float = 1.13
    featured: str | None = None  # name of the model for the per-matrix plots; default: largest
    cache_dir: str | None = None  # Hugging Face hub cache; default from the environment

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "out": str(self.out),
            "quick": self.quick,
            "seed": self.seed,
            "device": self.device,
            "l_phi": self.l_phi,
            "featured": self.featured,
            "cache_dir": self.cache_dir,
        }


@dataclass
class ScalingResult:
    """What a run produced: the tables (also on disk) and the files written."""

    models: pd.DataFrame
    exponents: pd.DataFrame
    norms: pd.DataFrame
    missing: list[dict[str, str]]
    files: list[Path]
    config: dict[str, Any]
    families: list[str] = field(default_factory=list)


def norms_11(path: str, device: str = "cpu") -> dict[str, list[float]]:
    """Entrywise ‖A‖_{1,1} of every proxy matrix of the checkpoint at ``path``, by kind.

    QK and OV are formed per head (``[H, N, N]``, float64) because the (1,1) norm of a product
    needs its entries (bounds.md §3). Returns kind → list of values (layer-major, head-minor).
    """
    from specbound.weights.adapters import open_weights

    tw = open_weights(path)
    kv = tw.info.kv_index()
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    for lw in tw.layers():
        lw = lw.to(device, torch.float64)
        qk = torch.bmm(lw.W_Q, lw.W_K[kv].transpose(1, 2))
        ov = torch.bmm(lw.W_V[kv], lw.W_O)
        out["QK"] += qk.abs().sum(dim=(1, 2)).tolist()
        out["OV"] += ov.abs().sum(dim=(1, 2)).tolist()
        out["M_in"].append(float(lw.M_in.abs().sum()))
        out["M_out"].append(float(lw.M_out.abs().sum()))
    return out


def _model_dict(info: Any) -> dict[str, Any]:
    """The report's model facts as a dict with keys L, N, H, d_h, d_ff, model_type."""
    if hasattr(info, "to_dict"):
        return info.to_dict()
    return {k: getattr(info, k) for k in ("L", "N", "H", "d_h", "d_ff", "model_type")}


def _log10_sa_p0_cap(mats: pd.DataFrame, L: int) -> float:
    """log10 of Σ_A T(A; 0) + sqrt(L) = Σ_A sqrt(N·rank A) + sqrt(L): the value B_SA takes when
    every matrix picks p* = 0, hence an upper bound on B_SA (p = 0 is on the grid P_m) that does
    not depend on the weights' values."""
    if "log10_term_p0" in mats:
        x = mats["log10_term_p0"].to_numpy(float) * math.log(10)
        ln = float(x.max() + np.log(np.exp(x - x.max()).sum()))
        return math.log10(math.exp(ln) + math.sqrt(L)) if ln < 700 else ln / math.log(10)
    return math.log10(float(mats["term_p0"].astype(float).sum()) + math.sqrt(L))


def run_scaling(
    cfg: ScalingConfig,
    progress: Progress | None = None,
    analyze: Callable[..., Any] | None = None,
    *,
    synthetic_grid: tuple[Sequence[int], Sequence[int]] | None = None,
    recipe: synth.Recipe | None = None,
) -> ScalingResult:
    """Run E2 on ``cfg.family`` and write every table and plot into ``cfg.out``.

    ``analyze`` defaults to :func:`specbound.analyze`. ``synthetic_grid`` (``(Ls, Ns)``) and
    ``recipe`` replace the synthetic family's grid and training recipe (default: the
    ``--quick`` or the full preset of :mod:`.synthetic`); both are recorded in ``config.json``.
    Raises :class:`InputError` when no model of the grid can be had (offline and not cached:
    use ``family="synthetic"``).
    """
    from specbound.experiments.scaling import plots

    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if analyze is None:
        from specbound import analyze
    report_fn = analyze

    def say(msg: str, done: int, total: int) -> None:
        if progress is not None:
            progress(msg, done, total)

    extra: dict[str, dict[str, Any]] = {}
    cfg_extra: dict[str, Any] = {}
    missing: list[tuple[grid.GridEntry, str]] = []
    if cfg.family == "synthetic":
        Ls, Ns = synthetic_grid or (synth.QUICK_GRID if cfg.quick else synth.DEFAULT_GRID)
        recipe = recipe or (synth.QUICK_RECIPE if cfg.quick else synth.DEFAULT_RECIPE)
        metas = synth.train_grid(out, Ls, Ns, recipe, cfg.seed, say, cfg.device)
        present = []
        for m in metas:
            e = grid.GridEntry(f"L{m['L']}_N{m['N']}", str(Path(m["path"]).relative_to(out)), m["L"], m["N"])
            present.append((e, m["path"]))
            extra[e.name] = {
                k: m.get(k)
                for k in (
                    "heldout_masked_ce",
                    "unigram_masked_ce",
                    "heldout_masked_acc",
                    "train_loss_last10pct",
                    "train_seconds",
                    "n_parameters",
                    "reused",
                )
            }
        cfg_extra = {
            "grid": {"L": list(Ls), "N": list(Ns)},
            "recipe": recipe.to_dict(),
            "architecture": "BertForMaskedLM, heads = N/32 (d_h = 32), d_ff = 4N, GELU, post-LN",
            "language": "specbound.experiments.synthetic_language.SyntheticLanguage"
            f"(seed={recipe.language_seed}): PCFG with number agreement and lexical selection",
        }
    else:
        if cfg.family == "miniatures":
            entries = grid.miniature_ids(cfg.quick)
            cfg_extra = {"grid": {"L": sorted({e.L for e in entries}), "N": sorted({e.N for e in entries})}}
        else:
            entries = grid.read_grid(cfg.family)
            cfg_extra = {"grid_file": str(Path(cfg.family).resolve())}
        say(f"resolve {len(entries)} checkpoints", 0, len(entries))
        present, missing = grid.resolve_entries(entries, cfg.cache_dir)
        if not present:
            cache = cfg.cache_dir or str(grid.hub_cache_dir())
            if cfg.family == "miniatures":
                raise InputError(
                    f"none of the {len(entries)} BERT miniatures is available (not in the Hugging Face "
                    f"cache {cache}, and the hub cannot be reached); run with --family synthetic for "
                    "the offline grid, or --family FILE for local checkpoints."
                )
            raise InputError(f"no checkpoint of {cfg.family} is available; first problem: {missing[0][1]}.")

    # -- analysis ---------------------------------------------------------------------------
    rows: list[dict[str, Any]] = []
    norm_rows: list[dict[str, Any]] = []
    reports: dict[str, tuple[Any, grid.GridEntry]] = {}
    families: list[str] = []
    not_evaluated: dict[str, Any] = {}
    featured = cfg.featured or max(present, key=lambda p: (p[0].L * p[0].N**2, p[0].L))[0].name
    if cfg.featured and cfg.featured not in {e.name for e, _ in present}:
        raise InputError(f"--featured {cfg.featured}: no such model among {', '.join(e.name for e, _ in present)}.")
    for i, (e, path) in enumerate(present):
        say(f"analyse {e.name}", i, len(present))
        try:
            rep = report_fn(path, l_phi=cfg.l_phi, device=cfg.device)
        except InputError as err:  # unreadable / unsupported checkpoint: listed, the study goes on
            missing.append((e, f"analysis failed: {err}"))
            continue
        info = _model_dict(rep.model)
        L_m, N_m = int(info["L"]), int(info["N"])
        if (L_m, N_m) != (e.L, e.N):
            raise InputError(
                f"{e.source}: the grid says L={e.L}, N={e.N} but the checkpoint has L={L_m}, N={N_m}; fix the grid."
            )
        row: dict[str, Any] = {
            "name": e.name,
            "L": e.L,
            "N": e.N,
            "H": int(info["H"]),
            "d_h": int(info["d_h"]),
            "d_ff": int(info["d_ff"]),
            "model_type": str(info.get("model_type", "")),
            "source": e.source,
        }
        for fam, br in rep.bounds.items():
            if fam not in families:
                families.append(fam)
            v = br.value
            lv = br.log10_value
            row[fam] = float(v) if v is not None and math.isfinite(float(v)) else None
            row[f"log10_{fam}"] = float(lv) if lv is not None and math.isfinite(float(lv)) else None
        for item in getattr(rep, "not_evaluated", None) or []:
            key = str(item.get("bound", item.get("name", item))) if isinstance(item, dict) else str(item)
            not_evaluated.setdefault(key, item if isinstance(item, dict) else {"bound": key})
        mats: pd.DataFrame = rep.matrices
        row["mean_p_star"] = float(mats["p_star"].mean())
        ad = getattr(rep, "adaptivity", None) or {}
        row["frac_p_star_zero"] = (float(ad["frac_p_star_zero"]) if ad.get("frac_p_star_zero") is not None
                                   else float((mats["p_star"] == 0).mean()))
        row["median_log10_scale_margin"] = ad.get("median_log10_scale_margin")  # B_SA's adaptivity (bounds.md §4)
        row["log10_sa_p0_cap"] = _log10_sa_p0_cap(mats, e.L)
        row["n_matrices"] = len(mats)
        n11 = norms_11(path, cfg.device)
        for kind in KINDS:
            sel = mats[mats["kind"] == kind]
            vals11 = n11.get(kind, [])
            norm_rows.append(
                {
                    "name": e.name,
                    "L": e.L,
                    "N": e.N,
                    "kind": kind,
                    "n_matrices": len(sel),
                    "mean_spectral": float(sel["spectral_norm"].mean()),
                    "mean_norm_21": float(sel["norm_21"].mean()),
                    "mean_norm_11": float(np.mean(vals11)) if vals11 else None,
                    "mean_frobenius": float(sel["frobenius"].mean()),
                    "mean_stable_rank": float(sel["stable_rank"].mean()),
                }
            )
        row["sum_spectral"] = float(mats["spectral_norm"].sum())
        row["sum_norm_21"] = float(mats["norm_21"].sum())
        row["sum_norm_11"] = float(sum(sum(v) for v in n11.values()))
        row.update(extra.get(e.name, {}))
        rows.append(row)
        if e.name == featured:
            reports[e.name] = (rep, e)
    if not rows:
        raise InputError(f"no checkpoint of {cfg.family} could be analysed; first problem: {missing[0][1]}")
    if featured not in reports:  # the featured model failed: feature the largest analysed one
        big = max(rows, key=lambda r: (r["L"] * r["N"] ** 2, r["L"]))
        featured = big["name"]
        e_big = next(e for e, _ in present if e.name == featured)
        reports[featured] = (report_fn(dict(present)[e_big], l_phi=cfg.l_phi, device=cfg.device), e_big)
    say("write tables and plots", len(present), len(present))

    models = pd.DataFrame(rows).sort_values(["L", "N"]).reset_index(drop=True)
    norms = pd.DataFrame(norm_rows).sort_values(["L", "N", "kind"]).reset_index(drop=True)
    exponents = fit_exponents(models, families + ["sa_p0_cap"])  # + the weight-independent cap of B_SA
    files = [out / "models.csv", out / "exponents.csv", out / "norms.csv"]
    write_csv_atomic(files[0], models)
    write_csv_atomic(files[1], exponents)
    write_csv_atomic(files[2], norms)

    rep, e = reports[featured]
    files += plots.plot_proxy_scaling(models, families, out)
    curves = []
    for r in rep.matrices.itertuples(index=False):
        p, logT = rep.term_curve(int(r.layer), int(r.head), str(r.kind))  # (P_m, log10 T(A; p))
        curves.append((str(r.kind), int(r.layer), int(r.head), p, logT, float(r.p_star)))
    files.append(plots.plot_term_curves(curves, out / "term_curves.png", f"{e.name} ({e.source})"))
    layers = sorted({0, e.L // 2, e.L - 1})
    spectra = {
        (kind, layer): np.asarray(rep.spectra(layer, 0 if kind in ("QK", "OV") else -1, kind), dtype=float)
        for kind in KINDS
        for layer in layers
    }
    files.append(plots.plot_sv_decay(spectra, out / "singular_values.png", f"{e.name} ({e.source})"))
    files.append(plots.plot_norms(norms, out / "norms_vs_N.png"))

    config = {
        "experiment": "E2: growth of bound proxies with depth and width (Sakai & Imaizumi 2026, Section 6)",
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        **cfg_extra,
        "families": families,
        "not_evaluated": list(not_evaluated.values()),
        "featured_model": featured,
        "models": [{"name": e.name, "source": e.source, "L": e.L, "N": e.N, "path": p} for e, p in present],
        "missing": [{"name": e.name, "source": e.source, "L": e.L, "N": e.N, "reason": why} for e, why in missing],
        "columns": {
            "<family>": "value of the bound proxy (empty when it overflows float64)",
            "log10_<family>": "log10 of the proxy (always finite)",
            "spectrum_adaptive": "B_SA (bounds.md section 4)",
            "edelman": "B_E (bounds.md section 5)",
            "mean_p_star": "mean over the model's matrices of the chosen Schatten index p*",
            "frac_p_star_zero": "fraction of the model's matrices whose p* is 0 (their summand is sqrt(N*rank)); "
            "from the report's adaptivity (bounds.md section 4)",
            "median_log10_scale_margin": "median over the matrices of log10(scale) - log10(c_break): decades by "
            "which B_SA's scale must shrink before a spectrum is used (report adaptivity, bounds.md section 4)",
            "log10_sa_p0_cap": "log10(sum_A sqrt(N*rank A) + sqrt(L)): B_SA if every p* were 0, an upper "
            "bound on B_SA that does not depend on the weight values (exponents.csv fits it as family sa_p0_cap)",
            "sum_norm_11": "sum over QK, OV, M_in, M_out of the entrywise (1,1) norm (computed here, QK/OV formed)",
        },
        "exponent_definition": "slope of log10(proxy) against log10(N) at fixed L (exponent of N) and "
        "against L at fixed N (decades per layer); 95% t intervals; pooled rows fit "
        "log10 proxy = c + a*log10 N + b*L over the whole grid",
        "exponent_intervals": "OLS intervals over single checkpoints (one model per grid point, no replicates): "
        "they measure lack of fit of the power law, not sampling error (exponents.csv interval_measures)",
        "versions": versions(),
        "started_utc": started,
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_seconds": round(time.time() - t0, 3),
        "torch_threads": torch.get_num_threads(),
    }
    files.append(out / "config.json")
    write_text_atomic(out / "config.json", json.dumps(config, indent=2, default=str))
    say("done", len(present), len(present))
    return ScalingResult(
        models=models,
        exponents=exponents,
        norms=norms,
        missing=config["missing"],
        files=files,
        config=config,
        families=families,
    )
