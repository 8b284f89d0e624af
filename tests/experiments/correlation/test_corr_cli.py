"""The E3 command: option errors and the ranking table on a tiny grid."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")


def test_cli_errors(tmp_path):
    from specbound.cli import app

    r = CliRunner().invoke(app, ["experiment", "correlation", "--task", "vision", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--task 'vision'" in r.output
    bad = tmp_path / "g.json"
    bad.write_text('{"axes": {"depth": [1, "two"]}}')
    r = CliRunner().invoke(app, ["experiment", "correlation", "--grid", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and str(bad) in r.output and "'two'" in r.output
    r = CliRunner().invoke(app, ["experiment", "correlation", "--jobs", "2", "--ray-address", "auto"])
    assert r.exit_code == 2 and "exclude each other" in r.output


def test_cli_prints_ranking_table(tmp_path):
    from specbound.cli import app

    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"axes": {"n_train": [16, 64], "steps": [2, 4]},
                                "base": {"width": 32, "depth": 1}, "settings": {"n_test": 64}}))
    r = CliRunner().invoke(app, ["experiment", "correlation", "--grid", str(grid), "--out", str(tmp_path / "o"),
                                 "--jobs", "1", "--no-plots"])
    assert r.exit_code == 0, r.output
    assert "4 models (0 reused" in r.output and "granulated over n_train, steps" in r.output
    assert "spectrum_adaptive" in r.output and "inv_sqrt_n" in r.output
    flat = " ".join(r.output.split())
    assert "Kendall τ-a" in flat and "τ-b beside it" in flat and "Dziugaite" in flat and "unweighted" in flat
    assert "B_SA (spectrum_adaptive) adaptivity" in flat and "frac_p_star_zero" in flat
    assert (tmp_path / "o" / "scores.csv").is_file()
    page = tmp_path / "o" / "report.html"
    assert r.stdout.strip().splitlines()[-1] == f"report: {page}"
    from pagecheck import check_page

    p = check_page(page, ["run", "ranking", "models", "plots", "skipped"])
    assert not p.images and "Plots not drawn (--no-plots" in page.read_text(encoding="utf-8")
