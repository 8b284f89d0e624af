"""``specbound version``."""

from __future__ import annotations

from specbound.cli.console import out

__all__ = ["version"]


def version() -> None:
    """Print the versions of specbound and its main dependencies."""
    from specbound.report.schema import versions

    for k, v in versions().items():
        out.print(f"{k} {v}", highlight=False)
