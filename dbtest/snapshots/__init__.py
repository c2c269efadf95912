"""Database snapshots: save and restore a whole database in milliseconds.

A snapshot is a database ``dbtest_snap_<name>`` copied from the source with
``CREATE DATABASE ... TEMPLATE`` and marked as dbtest's (purpose ``snapshot``, source,
time). Restoring copies it back the same way. ``export``/``import`` go through
``pg_dump -Fc`` / ``pg_restore`` for sharing a snapshot as a file.

Restoring never drops a database dbtest did not create. Restoring over such a database
(say the developer's own ``myapp_dev``) renames it to ``<name>_pre_restore_<time>`` and
keeps it; the restored copy is dbtest's (purpose ``restored``), so the next restore
replaces it directly. A copy needs the source to have no other sessions: they are
named in the error, and ``force=True`` terminates them.
"""

from dbtest.snapshots._command import snapshot_command
from dbtest.snapshots._core import (
    PREFIX,
    RestoreReport,
    SnapshotInfo,
    drop_snapshot,
    list_snapshots,
    resolve_server,
    restore_snapshot,
    save_snapshot,
)
from dbtest.snapshots._files import export_snapshot, import_snapshot, pg_tool

__all__ = ["PREFIX", "RestoreReport", "SnapshotInfo", "drop_snapshot", "export_snapshot",
           "import_snapshot", "list_snapshots", "pg_tool", "resolve_server", "restore_snapshot",
           "save_snapshot", "snapshot_command"]
