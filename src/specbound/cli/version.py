"""``specbound version``."""

from __future__ import annotations

from specbound.cli.console import out

__all__ = ["version"]


def version() -> None:
    """Print the versions of specbound and its main dependencies."""
    from specbound.analysis import _versions

    for k, v in _versions().items():
        out.print(f"{k} {v}", highlight=False)
