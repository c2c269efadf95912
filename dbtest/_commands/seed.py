"""``dbtest seed``: load seed sets into a database (:func:`dbtest.seeding.seed_command`)."""

from __future__ import annotations

from dbtest._commands._spec import Command
from dbtest.seeding import seed_command

__all__ = ["COMMANDS"]

# seed_command prints its table itself (it is also what `dbtest seed` shows in Python)
COMMANDS = (Command(seed_command, name="seed", metavar={"names": "NAME"}),)
