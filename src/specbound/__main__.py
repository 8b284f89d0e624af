"""``python -m specbound``: the ``specbound`` command (the same as ``python -m specbound.cli``).

An entry point, not library code: it runs the CLI package's ``__main__`` by name (``runpy``), so
that no library module imports the CLI (tests/test_import_graph.py).
"""

import runpy

runpy.run_module("specbound.cli", run_name="__main__", alter_sys=True)
