"""Lazy imports: ``import specbound`` and the CLI module import no heavy dependency until used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "pandas", "matplotlib", "transformers", "ray", "huggingface_hub",
         "specbound.analysis", "specbound.experiments.sparse_majority", "specbound.experiments.scaling"]


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"import sys, json\n{code}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_specbound_is_light():
    loaded = _loaded_after("import specbound")
    assert not any(loaded.values()), loaded


def test_cli_module_and_warm_start_import_no_heavy_dependency():
    # `specbound analyze` starts its warm start (numpy only) before torch and pandas are imported:
    # they must not come earlier, or the overlap with their import is lost (warmstart.py)
    loaded = _loaded_after("import specbound.cli, specbound.parallel, specbound.warmstart, specbound.npkernels")
    assert not any(loaded.values()), loaded


def test_public_names_resolve():
    import specbound

    for name in specbound.__all__:
        assert getattr(specbound, name) is not None
    from specbound import Report, analyze  # noqa: F401
    from specbound.analysis import analyze as direct

    assert specbound.analyze is direct
    assert set(specbound.__all__) <= set(dir(specbound))
    assert specbound.spectra.core.ff_singular_values  # subpackages as attributes, as before
    try:
        specbound.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("unknown attribute resolved")
