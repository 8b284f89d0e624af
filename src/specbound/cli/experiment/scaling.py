"""``specbound experiment scaling``: the command of experiment E2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from specbound.cli.console import (
    BAD_INPUT,
    USAGE,
    err,
    event_progress,
    fail,
    print_table,
    progress_bar,
)
from specbound.cli.console import out as con
from specbound.cli.options import check_device, check_outputs, check_positive
from specbound.errors import SpecboundError

__all__ = ["HELP", "scaling"]

HELP = """E2: how the bound proxies grow with depth L and width N (Sakai & Imaizumi 2026, Section 6).

--family miniatures: the 24 BERT miniatures google/bert_uncased_L-{2..12}_H-{128..768}_A-{H/64}
from the Hugging Face cache or the hub (missing ones are listed; --quick: the 4 smallest).
--family synthetic: BERT-style encoders (heads N/32, d_ff 4N) trained here on a seeded
synthetic language, grid L in {2,4,6,8} x N in {64,128,256}; --quick: L in {1,2,3} x N in
{32,64} with a 300-step budget. Finished checkpoints in OUT/checkpoints are reused.
--quick, measured (2 cores, 2 torch threads): 892 s of CPU time, nearly all
training; 70 min wall at load average 13-20 (a shared machine); at least
7.5 min on 2 idle cores (CPU time / 2).
--family FILE: a .csv or .json listing source (folder or hub id), L, N and optionally name.

Writes OUT/report.html (one self-contained page: tables, plots, config,
versions), models.csv, exponents.csv, norms.csv, config.json and PNG plots.
A progress bar on a terminal; --verbose: one line per trained and analysed model.
"""


def scaling(
    family: str = typer.Option("synthetic", "--family", help="miniatures, synthetic, or a grid FILE (.csv/.json)."),
    out: Path = typer.Option(Path("specbound-e2"), "--out", help="Output folder (reused on rerun)."),
    quick: bool = typer.Option(False, "--quick", help="Small grid and budget (synthetic: 6 models, 15 CPU-minutes; see above)."),
    seed: int = typer.Option(0, "--seed", help="Seed of corpora, initialisation and masking."),
    device: str = typer.Option("cpu", "--device", help="torch device for training and analysis."),
    l_phi: float = typer.Option(1.13, "--l-phi", help="Lipschitz constant of the activation (GELU: 1.13)."),
    featured: str = typer.Option(None, "--featured", help="Model name (e.g. L4_N128) for the per-matrix plots; default: the largest."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print one line per trained and per analysed model."),
) -> None:
    """E2: growth of the bound proxies with depth and width."""
    fam = family.strip()
    if fam not in ("miniatures", "synthetic"):
        p = Path(fam).expanduser()
        if p.suffix.lower() not in (".csv", ".json", ".tsv"):
            fail(f"--family {family!r}: use miniatures, synthetic or a .csv/.json grid file.", USAGE)
        if not p.is_file():
            fail(f"--family {family}: no such grid file.", USAGE)
        fam = str(p)
    if seed < 0:
        fail(f"--seed {seed}: must be a non-negative integer.", USAGE)
    if not (l_phi > 0 and l_phi < float("inf")):
        fail(f"--l-phi {l_phi}: must be a positive finite number.", USAGE)
    if threads is not None:
        check_positive("--threads", threads)
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: exists and is not a folder.", USAGE)
    check_outputs(folders=[(out, "--out", ("models.csv", "exponents.csv", "norms.csv", "config.json"))])
    check_device(device)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    from specbound.experiments.scaling import ScalingConfig, run_scaling

    cfg = ScalingConfig(family=fam, out=out, quick=quick, seed=seed, device=device, l_phi=l_phi, featured=featured)
    created = _new_folders(out)
    try:
        try:
            with progress_bar("E2 scaling", status=True) as update:
                res = run_scaling(cfg, event_progress(update, verbose))
        except SpecboundError as e:
            fail(str(e), BAD_INPUT)
        except FloatingPointError as e:
            fail(f"training diverged: {e}", BAD_INPUT)
        except OSError as e:
            from specbound.writing import reason

            fail(f"--out {out}: cannot write ({reason(e)}).", BAD_INPUT)
    except BaseException:
        _remove_if_empty(created)
        raise

    for m in res.missing:
        err.print(f"[yellow]missing:[/] {escape(str(m['source']))} ({escape(str(m['reason']))})", highlight=False, soft_wrap=True)
    con.print(f"E2 on {len(res.models)} models ({family}); wrote {out}/", highlight=False)
    _print_exponents(con, res.exponents, res.models)
    for f in res.files:
        con.print(f"  {f}", highlight=False)
    _write_page(res, out)


def _write_page(res: Any, out: Path) -> None:
    from specbound.report.experiments import write_experiment_page

    try:
        page = write_experiment_page("scaling", res, out)
    except OSError as e:
        fail(f"cannot write {out}/report.html: {e.strerror or e}", BAD_INPUT)
    con.print(f"report: {page}", highlight=False, soft_wrap=True)


def _print_exponents(con: Any, exponents: Any, models: Any = None) -> None:
    from rich.table import Table

    if exponents.empty:
        con.print("no exponents: the grid has no two models sharing L or N.")
        return
    t = Table(title="growth exponents: slope of log10 proxy (95% t interval)",
              caption="intervals: OLS over single checkpoints (one model per grid point), so they measure lack of "
                      "fit, not sampling error")
    for c in ("family", "against", "at", "n", "slope", "95% interval"):
        t.add_column(c)
    for r in exponents.itertuples(index=False):
        at = "pooled" if r.fixed == "all" else f"{r.fixed}={int(r.fixed_value)}"
        has_ci = r.ci_low is not None and r.ci_low == r.ci_low
        ci = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if has_ci else f"n/a ({r.n_points} points)"
        t.add_row(str(r.family), str(r.x), at, str(r.n_points), f"{r.slope:.3f}", ci)
    print_table(con, t)
    if models is not None and "frac_p_star_zero" in getattr(models, "columns", ()):
        from specbound.report.experiments import adaptivity_line

        con.print(adaptivity_line(models), highlight=False, soft_wrap=True)


def _new_folders(out: Path) -> list[Path]:
    """The folders a run will create for ``out`` (``out`` and its missing parents, deepest first)."""
    missing = []
    q = Path(out).absolute()
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run created, if it left nothing in them but empty folders
    (a failed E2 run does not leave an empty --out behind); a folder with a file stays."""
    import os

    for f in folders:
        if not f.is_dir():
            continue
        if any(files for _, _, files in os.walk(f)):
            return
        import shutil

        shutil.rmtree(f, ignore_errors=True)
