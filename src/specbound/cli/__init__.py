"""The ``specbound`` command. Only this package prints.

=============================  ==============================================================
``application``                the typer app, the registration of every command, ``main()``
``console``                    the consoles (results on stdout, the rest on stderr), ``fail``,
                               the progress bar
``options``                    checks of option values shared by several commands, ``--ray``
``analyze``, ``summary``       ``specbound analyze`` and the summary it prints
``bounds``                     ``specbound bounds`` (the catalogue) and ``specbound compare``
``version``                    ``specbound version``
``experiment/``                ``specbound experiment sparse-majority | scaling | correlation``
=============================  ==============================================================

The library never imports this package.
"""

from specbound.cli.application import app, main

__all__ = ["app", "main"]
