"""``specbound experiment ...``: one module per experiment command (E1 ``sparse_majority``, E2
``scaling``, E3 ``correlation``); the work is in :mod:`specbound.experiments`. Registered in
:mod:`specbound.cli.application`."""
