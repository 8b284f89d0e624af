"""Writing a report: JSON, CSV and plots, all or nothing (files are written to a staging folder
inside the report folder first and moved into place only when every file is complete; the rules
for every kind of target are :mod:`specbound.writing`'s)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

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


#: The files of a report folder (plots aside): a folder in the way of one of them is an error
#: before anything is written (:func:`specbound.writing.check_folder_target`).
REPORT_FILES = ("report.json", "matrices.csv", "bounds.csv", "not_analysed.csv", "report.html")


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
    ``report.html`` (one self-contained page, :mod:`specbound.report.html`), with ``plots`` the
    plots of :data:`~specbound.report.plots.PLOTS` (the same PNGs are embedded in the page), and
    the data side's ``attention/`` folder when the report has one. The folder is replaced as a
    whole or not at all (:func:`specbound.writing.report_folder`: staged inside ``out_dir``,
    every entry checked before any is replaced). Without ``plots``, plot files an earlier run
    left in ``out_dir`` are removed, so that the folder never holds another model's plots beside
    this report. ``json_path`` / ``csv_path`` / ``html_path`` write the JSON document / matrix
    table / page to those targets as well (``-`` is standard output; a symlink's target, a FIFO
    or a device is written, never replaced: :mod:`specbound.writing`). Every target is checked
    before anything is written; an error is a :class:`~specbound.writing.WriteError`.
    """
    from specbound import writing

    text = report_json(report)
    extras = [(p, opt) for p, opt in ((json_path, "--json"), (csv_path, "--csv"), (html_path, "--html")) if p is not None]
    if out_dir is not None:
        writing.check_folder_target(out_dir, "--out", REPORT_FILES + PLOT_FILES,
                                    ("attention",) if getattr(report, "attention", None) is not None else ())
    for p, opt in extras:
        writing.check_file_target(p, opt)
    pngs: dict[str, bytes] | None = None
    page: str | None = None
    if plots and (out_dir is not None or html_path is not None):
        from specbound.report.plots import render_plots  # matplotlib: imported only when plotting

        pngs = render_plots(report)
    if out_dir is not None or html_path is not None:
        from specbound.report.sections import report_page

        page = report_page(report, pngs)
    contents = {"--json": text.encode(), "--html": (page or "").encode("utf-8"),
                "--csv": report.matrices.to_csv(index=False).encode()}
    # files beside their targets first (atomic ones), so that none can fail after the folder is in place
    staged: list[tuple[Path, Path]] = []
    later: list[tuple[str | os.PathLike, str]] = []
    written: list[Path] = []
    try:
        for p, opt in extras:
            if writing.target_kind(p) == "file":
                final, _ = writing._resolve(Path(p))
                try:
                    writing._mkdirs(final.parent)
                    staged.append((writing.stage_file(final, contents[opt]), final))
                except OSError as e:
                    raise writing._error(p, writing.reason(e), opt) from None
            else:
                later.append((p, opt))
        if out_dir is not None:
            remove = [] if pngs is not None else list(PLOT_FILES)
            with writing.report_folder(out_dir, remove=remove, option="--out") as stage:
                _fill(stage.path, report, text, pngs, page, plots)
            written += [w for w in stage.written if w.is_file()]
            if (Path(out_dir) / "attention") in stage.written:
                written += sorted(p for p in (Path(out_dir) / "attention").iterdir() if p.is_file())
        for tmp, final in staged:
            try:
                os.replace(tmp, final)
            except OSError as e:
                raise writing._error(final, writing.reason(e)) from None
        for (p, opt) in extras:
            if any(f == writing._resolve(Path(p))[0] for _, f in staged):
                written.append(Path(p))
        for p, opt in later:
            if writing.write_bytes(p, contents[opt], opt) is not None:
                written.append(Path(p))
        return written
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()


def _fill(stage: Path, report: "Report", text: str, pngs: dict[str, bytes] | None, page: str | None,
          plots: bool) -> None:
    """Write the report folder's files into ``stage``."""
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
    attention = getattr(report, "attention", None)
    if attention is not None:
        (stage / "attention").mkdir()
        attention.fill(stage / "attention", plots=plots)
