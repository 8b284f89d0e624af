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
    plots: bool = True,
) -> list[Path]:
    """Write the report; return the paths written.

    ``out_dir`` receives ``report.json``, ``matrices.csv``, ``bounds.csv``, ``not_analysed.csv``
    and the plots of :data:`~specbound.report.plots.PLOTS`; ``json_path`` / ``csv_path`` write
    the JSON document / matrix table to those files as well.
    """
    targets: list[tuple[Path, Path]] = []  # (staged file, final path)
    text = report_json(report)
    staging: list[Path] = []
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
            if plots:
                from specbound.report.plots import PLOTS  # matplotlib: imported only when plotting (~0.8 s)

                for name, fn in PLOTS.items():
                    fn(report, stage / name)
            targets += [(f, out / f.name) for f in sorted(stage.iterdir())]
        for path, writer in ((json_path, "json"), (csv_path, "csv")):
            if path is None:
                continue
            p = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=".specbound-", dir=_writable_parent(p))
            os.close(fd)
            staged = Path(tmp)
            staging.append(staged)
            if writer == "json":
                staged.write_text(text)
            else:
                report.matrices.to_csv(staged, index=False)
            targets.append((staged, p))
        written = []
        for staged, final in targets:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
            written.append(final)
        return written
    finally:
        for s in staging:
            if s.is_dir():
                shutil.rmtree(s, ignore_errors=True)
            elif s.exists():
                s.unlink()
