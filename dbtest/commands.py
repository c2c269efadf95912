"""The functions behind ``dbtest up``, ``down``, ``doctor`` and ``clean``, for Python.

Each takes a resolved :class:`~dbtest.settings.Settings` (plus its own arguments) and
returns a dataclass describing what it did; nothing here prints. The ``dbtest`` command
line derives its parser from these same functions (they live in ``dbtest._commands``,
one module per command group)::

    from dbtest import commands
    from dbtest.settings import resolve

    server = commands.up(resolve(), detach=True)
    ...
    commands.down(resolve())

The other commands' functions: :func:`dbtest.seeding.seed_command`,
:func:`dbtest.snapshots.snapshot_command`. Errors are
:class:`~dbtest.errors.DbtestError` subclasses with a message that names the fix.
"""

from __future__ import annotations

from dbtest._commands import version
from dbtest._commands.clean import CleanItem, CleanReport, clean, clean_templates
from dbtest._commands.doctor import BACKEND_ORDER, BackendCheck, DoctorReport, doctor
from dbtest._commands.server import DownResult, UpResult, down, up
from dbtest.provision import (
    STATE_FILE,
    DetachedServer,
    detached_server,
    detached_server_url,
    detached_servers,
    write_state,
)

__all__ = [
    "BACKEND_ORDER",
    "STATE_FILE",
    "BackendCheck",
    "CleanItem",
    "CleanReport",
    "DetachedServer",
    "DoctorReport",
    "DownResult",
    "UpResult",
    "clean",
    "clean_templates",
    "detached_server",
    "detached_server_url",
    "detached_servers",
    "doctor",
    "down",
    "up",
    "version",
    "write_state",
]
