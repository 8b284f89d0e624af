"""cli/application.py: every command registered by name, each with a working --help."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from specbound.cli import app, main
from specbound.cli.application import experiment_app

runner = CliRunner()

COMMANDS = ["analyze", "attention", "version", "bounds", "compare", "track-plot"]
EXPERIMENTS = ["sparse-majority", "scaling", "correlation", "infinite-width"]


def test_every_command_is_registered_explicitly():
    assert [c.name for c in app.registered_commands] == COMMANDS
    assert [(g.name, g.typer_instance) for g in app.registered_groups] == [("experiment", experiment_app)]
    assert [c.name for c in experiment_app.registered_commands] == EXPERIMENTS


def test_the_script_entry_point_exists():
    # pyproject: specbound = "specbound.cli:main"
    import specbound.cli.application as application

    assert main is application.main and callable(main)


@pytest.mark.parametrize("argv", [[]] + [[c] for c in COMMANDS] + [["experiment"]]
                         + [["experiment", e] for e in EXPERIMENTS])
def test_help_of_every_command(argv):
    res = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and "--help" in res.output


def test_no_arguments_prints_the_command_list():
    res = runner.invoke(app, [], env={"COLUMNS": "200"})
    assert res.exit_code == 2  # no_args_is_help: the help, as a usage error
    for c in COMMANDS + ["experiment"]:
        assert c in res.output
