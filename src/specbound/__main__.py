"""``python -m specbound``: the ``specbound`` command."""

from specbound.cli.application import main

main()
