"""OUT/report.html of E1 (written by the command) and E4 (the library call the command makes),
on tiny configurations; E4's short repr and notebook display. (E2's and E3's pages are tested
beside their session fixtures: scaling/test_scaling_study.py, correlation/test_corr_sweep.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pagecheck import check_page
from report.test_html import parse
from typer.testing import CliRunner

from specbound.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sparse_majority_command_writes_its_page(tmp_path: Path) -> None:
    out = tmp_path / "e1"
    r = CliRunner().invoke(app, ["experiment", "sparse-majority", "--protocol", "literal", "--lengths", "10,12", "--seeds", "2",
                                 "--n-train", "8", "--n-val", "32", "--n-test", "64", "--max-epochs", "5",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = out / "report.html"
    assert r.stdout.strip().splitlines()[-1] == f"report: {page}"
    meta = json.loads((out / "config.json").read_text())
    pngs = [out / f for f in meta["files"] if f.endswith(".png")]
    assert len(pngs) > 6
    p = check_page(page, ["by_T", "trends", "runs", "plots", "skipped", "files"], pngs)
    assert len(p.images) == len(pngs)
    text = page.read_text(encoding="utf-8")
    runs = pd.read_csv(out / "runs.csv")
    n_cap = int(runs["stopped_at_cap"].sum())
    assert n_cap > 0 and f"{n_cap} of {len(runs)} runs stopped at the epoch cap (5)" in text
    assert f"Runs stopped at the epoch cap ({n_cap})" in text  # what did not fit, in the "skipped" section
    for q in ("l1_sum_all_variables", "log10_spectrum_adaptive", "frac_p_star_zero"):
        assert f"<td>{q}</td>" in text, q
    assert meta["deviations"][0] in text  # the protocol's deviations, as config.json lists them
    assert {"slope (all)", "95% CI (fitted)", "reached train acc"} <= set(p.headers)

    # What run_study returns: the plain dict of tables, with a short repr and a notebook display.
    from specbound.experiments.sparse_majority import SparseMajorityResult

    res = SparseMajorityResult(runs=runs, trends=pd.read_csv(out / "trends.csv"), config=meta,
                               files=[str(out / f) for f in meta["files"]])
    assert isinstance(res, dict) and set(res) == {"runs", "trends", "config", "files"}
    text_repr = repr(res)
    assert text_repr.startswith("<specbound SparseMajorityResult") and len(text_repr.splitlines()) <= 8
    snippet = res._repr_html_()
    assert "<img" not in snippet and "<script" not in snippet and "<table" in snippet
    assert "l1_sum_all_variables" in snippet


def test_infinite_width_page_and_notebook_display(tmp_path: Path) -> None:
    from specbound.experiments.infinite_width import InfiniteWidthConfig, run_study
    from specbound.report.experiments import write_experiment_page

    cfg = InfiniteWidthConfig(n_seeds=2, samples=300, relu_samples=300, n_values=(4, 8), H_values=(1, 2),
                              n_fixed=8, H_fixed=2, head_width=4, experiments=("n_sweep", "H_sweep"))
    res = run_study(cfg, tmp_path / "e4", plots=True)
    page = write_experiment_page("infinite-width", res, tmp_path / "e4")
    pngs = [f for f in res.files if f.suffix == ".png"]
    p = check_page(page, ["run", "headline", "summary", "plots", "skipped", "files"], pngs)
    assert len(p.images) == 3
    text = page.read_text(encoding="utf-8")
    assert "Sweeps not run (--sweeps): relu (relu_n_sweep), lowrank (lowrank_H_sweep)." in text
    slope = res.headline["n_sweep"]["slope_kl_to_limit"]["slope"]
    assert f"KL(finite ‖ limit) ∝ n^{slope:.2f}" in text
    assert len([h for h in p.headers if h == "KL(fin‖lim)"]) == 1 and text.count("<tr>") >= len(res.summary) + 1
    r = repr(res)
    assert r.startswith("<specbound StudyResult: E4 · 4 (sweep, seed) units") and len(r) < 600
    assert f"n^{slope:.2f}" in r and "DataFrame" not in r
    h = res._repr_html_()
    ph = parse(h)
    assert not ph.images and "<script" not in h and f"n^{slope:.2f}" in h and "KL(fin‖lim)" in ph.headers
