"""dbtest's commands: one module per command group, each a set of plain functions
``fn(settings, ...)`` that return what they did, plus the ``COMMANDS`` the command line
derives its parser from (see :class:`dbtest._commands._spec.Command`).

==============  ===========================================================
``server``      ``dbtest up`` / ``dbtest down``
``doctor``      ``dbtest doctor``
``clean``       ``dbtest clean``
``seed``        ``dbtest seed`` (the work: :mod:`dbtest.seeding`)
``snapshot``    ``dbtest snapshot ...`` (the work: :mod:`dbtest.snapshots`)
``migrations``  ``dbtest migrations check`` (the work: ``dbtest._migrations_check``)
``cache``       ``dbtest cache key|path|wait`` (the work: ``dbtest._cachekey``)
==============  ===========================================================

Python callers use the public :mod:`dbtest.commands` (and the packages named above).
"""

from __future__ import annotations

import importlib

from dbtest._commands._spec import GLOBAL_SETTINGS, PROG, Command, Invocation, error

__all__ = ["GLOBAL_SETTINGS", "GROUPS", "PROG", "Command", "Invocation", "all_commands", "error",
           "version"]

#: the command group modules, in the order ``dbtest --help`` lists their commands
GROUPS = ("server", "doctor", "clean", "seed", "snapshot", "migrations", "cache")


def all_commands() -> list[Command]:
    """Every command of every group, in ``dbtest --help`` order."""
    found: list[Command] = []
    for group in GROUPS:
        module = importlib.import_module(f"{__name__}.{group}")
        found += module.COMMANDS
    return found


def version() -> str:
    """dbtest's version."""
    from dbtest import __version__

    return __version__
