"""``dbtest snapshot list|save|restore|drop|export|import``: database snapshots
(:func:`dbtest.snapshots.snapshot_command` does the work)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from dbtest._commands._spec import Command, Invocation, say
from dbtest.errors import ConfigError
from dbtest.snapshots import snapshot_command

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["ACTION_ARGUMENTS", "COMMANDS", "snapshot"]

#: the words each action takes after it, in order
ACTION_ARGUMENTS = {"list": (), "save": ("NAME",), "restore": ("NAME",), "drop": ("NAME",),
                    "export": ("NAME", "FILE"), "import": ("FILE", "NAME")}


def snapshot(settings: Settings,
             action: Literal["list", "save", "restore", "drop", "export", "import"],
             args: Sequence[str] = (), /, db: str | None = None, force: bool = False,
             replace: bool = False) -> str:
    """Save, restore, list, drop, export or import database snapshots.

    ``dbtest snapshot save|restore|list|drop|export|import``; returns the text to print.
    The server is the ``url`` setting (``--url``, ``DBTEST_URL``), else the server
    ``dbtest up --detach`` left running.

    :param action: list | save NAME | restore NAME | drop NAME | export NAME FILE |
        import FILE NAME
    :param args: the action's NAME and FILE
    :param db: database to save from / restore into (default: the URL's database / the
        snapshot's source)
    :param force: terminate sessions connected to the database
    :param replace: overwrite a snapshot of the same name
    """
    wanted = ACTION_ARGUMENTS[action]
    if len(args) != len(wanted):
        raise ConfigError(f"dbtest snapshot {action} takes {' '.join(wanted) or 'nothing'}"
                          f", got {' '.join(args) or 'nothing'}; use: dbtest snapshot "
                          f"{' '.join((action, *wanted))}")
    given = dict(zip(wanted, args, strict=True))
    return snapshot_command(settings, action, name=given.get("NAME"), url=None, db=db,
                            force=force, path=given.get("FILE"), replace=replace)


def _show(text: str, run: Invocation) -> int:
    say(text)
    return 0


COMMANDS = (Command(snapshot, _show, metavar={"args": "NAME|FILE"}),)
