"""``python -m specbound.cli``: the ``specbound`` command."""

from specbound.cli.application import main

main()
