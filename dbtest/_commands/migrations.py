"""``dbtest migrations check``: an Alembic history's single head, upgrade, stairway and
model drift (:func:`dbtest._migrations_check.migrations_check_command` does the work)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from dbtest._commands._spec import Command, Invocation, say
from dbtest._migrations_check import MigrationReport, migrations_check_command

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["COMMANDS", "migrations"]


def migrations(settings: Settings, action: Literal["check"], ini: str | None = None, /,
               models: str | None = None) -> MigrationReport:
    """Check an Alembic history: single head, upgrade, stairway, model drift.

    Runs every check on a throwaway database (on the ``url`` setting's server when one
    is set, else on a throwaway server); exits 1 when a check fails.

    :param action: check: single head, upgrade, stairway, model drift
    :param ini: alembic.ini (default: the schema setting)
    :param models: MetaData or declarative Base to compare with (model drift)
    """
    return migrations_check_command(settings, ini=ini, models=models)


def _show(report: MigrationReport, run: Invocation) -> int:
    say(str(report))
    return 0 if report.ok else 1


COMMANDS = (Command(migrations, _show, metavar={"models": "MODULE:ATTR"}),)
