"""The terminal summary: no header cut at 80 or 160 columns, in a terminal and piped; plain
text without box characters when piped; the wide table on wide terminals; run notes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from specbound.cli.summary import print_summary
from specbound.report.tables import LAYER_COLUMNS, run_notes

BOX = set("┏┓┗┛━┃┡┩│─┼╇╈╋")


def render(report, width: int, terminal: bool) -> str:
    buf = io.StringIO()
    c = Console(file=buf, width=width, force_terminal=terminal, color_system=None, legacy_windows=False)
    print_summary(report, [Path("/tmp/x/report.html")], Path("/tmp/x"), console=c)
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 160])
@pytest.mark.parametrize("terminal", [True, False])
def test_no_header_is_cut(minilm_report, width: int, terminal: bool) -> None:
    text = render(minilm_report, width, terminal)
    assert "…" not in text
    # Paths are printed whole on one line so they can be copied; they may pass the width (the
    # model's path does on a machine whose site-packages sits deeper than this one's).
    source = f"source: {minilm_report.model.source}"
    assert source in text.splitlines()
    assert max(len(line) for line in text.splitlines() if line != source) <= width
    header_lines = [ln for ln in text.splitlines() if ln.strip().startswith("layer")]
    got = {h for ln in header_lines for h in ln.split()}
    assert set(LAYER_COLUMNS) <= got, (set(LAYER_COLUMNS) - got)
    assert len(header_lines) == (1 if width >= 110 else 2)
    fam = [ln for ln in text.splitlines() if ln.strip().startswith("family")]
    assert fam and fam[0].split()[:4] == ["family", "value", "log10", "status"]
    assert "Open the report: /tmp/x/report.html" in text.splitlines()[-1]


def test_piped_output_is_plain_and_greppable(minilm_report) -> None:
    text = render(minilm_report, 80, terminal=False)
    assert not (set(text) & BOX)
    row = next(ln for ln in text.splitlines() if ln.startswith("spectrum_adaptive"))
    assert row.split()[-1] == "proxy" and float(row.split()[2]) == pytest.approx(
        minilm_report.bounds["spectrum_adaptive"].log10_value, abs=1e-4)
    layer0 = [ln.split() for ln in text.splitlines() if ln.split()[:1] == ["0"]]
    assert len(layer0) == 2  # one line per layer in each of the two narrow tables
    assert "adaptivity: inactive" in text


def test_run_notes_say_approximate_and_cache() -> None:
    class R:
        options = {"approx": {"probes": 8}, "cache": {"hits": 20, "misses": 4, "corrupt": 0, "writes": 4}}

    notes = run_notes(R())  # type: ignore[arg-type]
    assert any(n.startswith("approximate") for n in notes)
    assert any("20 of 24 blocks from the cache" in n for n in notes)
    assert run_notes(type("E", (), {"options": {}})()) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("terminal", [True, False])
def test_experiment_tables_are_not_cut_when_piped(terminal: bool) -> None:
    """The experiments' result tables (E1 slopes, E2 exponents, E3 ranking, E4 KL): piped, every
    cell is printed whole (no …) so the values can be read and grepped; on a terminal they fit."""
    from rich.table import Table

    from specbound.cli.console import print_table

    buf = io.StringIO()
    c = Console(file=buf, width=80, force_terminal=terminal, color_system=None, soft_wrap=True)
    t = Table(title="ranking")
    for i in range(10):
        t.add_column(f"granulated_tau_{i}")
    values = [f"{(i - 5) / 7:+.6f}" for i in range(10)]
    t.add_row(*values)
    print_table(c, t)
    text = buf.getvalue()
    if terminal:
        assert max(len(ln) for ln in text.splitlines()) <= 80
    else:
        assert "…" not in text
        row = next(ln for ln in text.splitlines() if values[0] in ln)
        assert [v for v in values if v in row] == values
