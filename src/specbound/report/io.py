"""Writing a report: JSON, CSV and plots, all or nothing (files are written to a temporary
folder first and moved into place only when every file is complete)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from specbound.errors import InputError

if TYPE_CHECKING:
    from specbound.analysis import Report


def report_json(report: "Report") -> str:
    """The report as JSON text (``allow_nan=False``: a NaN or inf would be a bug, not output)."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False)


def bounds_table(report: "Report") -> pd.DataFrame:
    """One row per bound family: value, log10 value, status, citation."""
    return pd.DataFrame(
        [
            {"bound": k, "value": b.value, "log10_value": b.log10_value, "status": b.status, "citation": b.citation}
            for k, b in report.bounds.items()
        ]
    )


PLOT_FILES = ("p_star.png", "term_curves.png", "singular_values.png")


def stale_plots(out_dir: str | os.PathLike) -> list[str]:
    """The plot files in ``out_dir`` (a run without plots removes them: they would be another run's)."""
    return [n for n in PLOT_FILES if (Path(out_dir) / n).is_file()]


def _writable_parent(path: Path) -> Path:
    parent = path.parent if path.parent != Path("") else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{path}: cannot create its folder ({e.strerror}).") from None
    return parent


def write_report(
    report: "Report",
    out_dir: str | os.PathLike | None = None,
    *,
    json_path: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
    html_path: str | os.PathLike | None = None,
    plots: bool = True,
) -> list[Path]:
    """Write the report; return the paths written.

    ``out_dir`` receives ``report.json``, ``matrices.csv``, ``bounds.csv``, ``not_analysed.csv``,
    ``report.html`` (one self-contained page, :mod:`specbound.report.html`) and, with ``plots``,
    the plots of :data:`~specbound.report.plots.PLOTS` (the same PNGs are embedded in the page).
    Without ``plots``, plot files an earlier run left in ``out_dir`` are removed, so that the
    folder never holds another model's plots beside this report. ``json_path`` / ``csv_path`` /
    ``html_path`` write the JSON document / matrix table / page to those files as well.
    """
    targets: list[tuple[Path, Path]] = []  # (staged file, final path)
    text = report_json(report)
    staging: list[Path] = []
    pngs: dict[str, bytes] | None = None
    page: str | None = None
    if plots and (out_dir is not None or html_path is not None):
        from specbound.report.plots import render_plots  # matplotlib: imported only when plotting

        pngs = render_plots(report)
    if out_dir is not None or html_path is not None:
        from specbound.report.sections import report_page

        page = report_page(report, pngs)
    try:
        if out_dir is not None:
            out = Path(out_dir)
            if out.exists() and not out.is_dir():
                raise InputError(f"{out}: exists and is not a folder; choose another --out.")
            parent = _writable_parent(out)
            stage = Path(tempfile.mkdtemp(prefix=".specbound-", dir=parent))
            staging.append(stage)
            (stage / "report.json").write_text(text)
            report.matrices.to_csv(stage / "matrices.csv", index=False)
            bounds_table(report).to_csv(stage / "bounds.csv", index=False)
            pd.DataFrame(report.not_analysed, columns=["tensor", "shape", "reason"]).to_csv(
                stage / "not_analysed.csv", index=False
            )
            if pngs is not None:
                for name, png in pngs.items():
                    (stage / name).write_bytes(png)
            assert page is not None
            (stage / "report.html").write_text(page, encoding="utf-8")
            targets += [(f, out / f.name) for f in sorted(stage.iterdir())]
        for path, writer in ((json_path, "json"), (csv_path, "csv"), (html_path, "html")):
            if path is None:
                continue
            p = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=".specbound-", dir=_writable_parent(p))
            os.close(fd)
            staged = Path(tmp)
            staging.append(staged)
            if writer == "json":
                staged.write_text(text)
            elif writer == "html":
                staged.write_text(page or "", encoding="utf-8")
            else:
                report.matrices.to_csv(staged, index=False)
            targets.append((staged, p))
        written = []
        for staged, final in targets:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
            written.append(final)
        if out_dir is not None and pngs is None:
            for name in stale_plots(out_dir):
                (Path(out_dir) / name).unlink()
        return written
    finally:
        for s in staging:
            if s.is_dir():
                shutil.rmtree(s, ignore_errors=True)
            elif s.exists():
                s.unlink()
