"""What importing specbound costs, and that its public names are the objects they name.

The guarantee: ``import specbound`` and ``import specbound.cli`` import no heavy dependency
(numpy, torch, pandas, matplotlib, transformers, ray, huggingface_hub) and no library module
beyond ``specbound.errors``: the public names load on first use (PEP 562), and every command
imports the library inside its function. So ``specbound --help``, every command's ``--help`` and
every usage error answer in a fraction of a second, before torch is loaded. Checked in fresh
interpreters (a subprocess each), since this test process has imported everything already.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys

import pytest

HEAVY = ["numpy", "torch", "pandas", "matplotlib", "transformers", "ray", "huggingface_hub", "safetensors",
         "scipy"]

#: the only library modules ``import specbound.cli`` may load (besides the cli package itself)
CLI_MAY_LOAD = {"specbound", "specbound.errors"}


def _loaded_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; return the heavy modules and specbound modules loaded."""
    probe = (
        "import sys, json\n"
        f"{code}\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "own = sorted(m for m in sys.modules if m == 'specbound' or m.startswith('specbound.'))\n"
        "print(json.dumps({'heavy': heavy, 'specbound': own}))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_import_specbound_is_light():
    loaded = _loaded_after("import specbound")
    assert loaded == {"heavy": [], "specbound": ["specbound"]}


def test_import_cli_loads_no_library_module():
    loaded = _loaded_after("import specbound.cli")
    assert loaded["heavy"] == []
    assert "specbound.cli.application" in loaded["specbound"]  # the whole app, every command module
    library = {m for m in loaded["specbound"] if not (m == "specbound.cli" or m.startswith("specbound.cli."))}
    assert library <= CLI_MAY_LOAD, library


def _run_cli(argv: list[str], code: int) -> str:
    """Code running the ``specbound`` command with ``argv``, checking its exit status."""
    return (
        f"sys.argv = ['specbound', *{argv!r}]\n"
        "from specbound.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        f"    assert e.code == {code}, e.code\n"
        "else:\n"
        "    raise AssertionError('no SystemExit')\n"
    )


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0),
    (["analyze", "--help"], 0),
    (["experiment", "correlation", "--help"], 0),
    (["analyze", "--dtype", "float16"], 2),
    (["analyze", "a", "b", "--ray-address", ""], 2),
    (["compare", "a"], 2),
    (["experiment", "sparse-majority", "--seeds", "0"], 2),
])
def test_help_and_usage_errors_import_nothing_heavy(argv, code):
    loaded = _loaded_after(_run_cli(argv, code))
    assert loaded["heavy"] == [], (argv, loaded)


def test_public_names_are_the_objects_of_their_modules():
    import specbound

    assert set(specbound.__all__) == set(specbound._EXPORTS)
    assert set(specbound.__all__) <= set(dir(specbound))
    for name in specbound.__all__:
        value = getattr(specbound, name)
        home = importlib.import_module(specbound._EXPORTS[name])
        assert value is getattr(home, name), name
        # defined in the package (maybe re-exported by the module named), under this name
        assert value.__name__ == name, name
        assert inspect.getmodule(value).__name__.startswith("specbound."), name
    from specbound import analyze
    from specbound.analysis import analyze as direct

    assert analyze is direct


def test_subpackages_are_attributes():
    import specbound

    for name in sorted(specbound._SUBMODULES):
        assert getattr(specbound, name) is sys.modules[f"specbound.{name}"], name
        assert name in dir(specbound)
    with pytest.raises(AttributeError, match="no_such_name"):
        specbound.no_such_name  # noqa: B018
