"""``specbound track-plot DIR`` and the plots a tracked run writes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import specbound
from specbound.cli import app

from integrations.tiny import tiny_bert

runner = CliRunner()
PLOTS = ("track_bounds.png", "track_sigma1.png", "track_p_star_zero.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    model = tiny_bert()
    tr = specbound.Tracker(out, bounds=["spectrum_adaptive", "edelman"])
    for step in (5, 10):
        tr.update(model, step=step, metrics={"loss": 1.0 / step, "eval_loss": 2.0 / step})
    tr.close(plots=False)
    return out


def test_track_plot_writes_the_three_plots(run_dir, tmp_path):
    res = runner.invoke(app, ["track-plot", str(run_dir), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "2 updates, steps 5..10" in res.stdout
    for f in PLOTS:
        assert (tmp_path / "p" / f).stat().st_size > 0


def test_track_plot_bad_folders(tmp_path):
    res = runner.invoke(app, ["track-plot", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "not a folder" in res.output
    res = runner.invoke(app, ["track-plot", str(tmp_path)])
    assert res.exit_code == 1 and "no track.csv" in res.output
    (tmp_path / "track.csv").write_text("a,b\n1,2\n")
    res = runner.invoke(app, ["track-plot", str(tmp_path)])
    assert res.exit_code == 1 and "missing column" in res.output
