"""``dbtest snapshot ...``: the CLI's one function."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtest.errors import ConfigError
from dbtest.snapshots._core import (
    drop_snapshot,
    list_snapshots,
    resolve_server,
    restore_snapshot,
    save_snapshot,
)
from dbtest.snapshots._files import export_snapshot, import_snapshot

if TYPE_CHECKING:
    from dbtest.provision import PostgresServer
    from dbtest.settings import Settings

__all__ = ["snapshot_command"]


def _command_server(settings: Settings, url: str | None) -> PostgresServer:
    target = url or settings.url
    if target:
        return resolve_server(target)
    from dbtest.commands import detached_server

    found = detached_server(settings.cache_dir)
    if found is None or not found.running():
        raise ConfigError("dbtest snapshot needs a server: pass --url postgresql://..., set "
                          "DBTEST_URL (or url in [tool.dbtest]), or start one with "
                          "dbtest up --detach")
    server = resolve_server(found.url)
    server.backend = found.backend  # dbtest's own server: the fast FILE_COPY is safe there
    return server


def snapshot_command(settings: Settings, action: str, name: str | None = None,
                     url: str | None = None, db: str | None = None, force: bool = False,
                     path: str | None = None, replace: bool = False) -> str:
    """Save, restore, list, drop, export or import database snapshots.

    ``dbtest snapshot save|restore|list|drop|export|import``; returns the text to print.

    The server is ``url``, else the ``url`` setting (``DBTEST_URL``), else the server
    ``dbtest up --detach`` left running. ``save`` copies ``db`` (default: the database
    named in the URL); ``restore`` writes into ``db`` (default: the snapshot's source);
    ``export``/``import`` take ``path``.
    """
    server = _command_server(settings, url)
    if action == "list":
        snaps = list_snapshots(server)
        return "\n".join(s.describe() for s in snaps) if snaps else "no snapshots"
    if not name:
        raise ConfigError(f"dbtest snapshot {action} needs a snapshot NAME")
    if action == "save":
        info = save_snapshot(server, db or server.params.dbname, name, force=force,
                             replace=replace)
        return f"saved {info.describe()}"
    if action == "restore":
        report = restore_snapshot(server, name, db, force=force)
        text = f"restored {name} into {report.database} in {report.seconds * 1000:.0f} ms"
        if report.terminated:
            text += f"; terminated {len(report.terminated)} session(s)"
        if report.kept_original:
            text += (f"; the database it replaced was not made by dbtest and is kept as "
                     f"{report.kept_original} (drop it when you no longer need it)")
        return text
    if action == "drop":
        drop_snapshot(server, name)
        return f"dropped snapshot {name}"
    if action in ("export", "import"):
        if not path:
            raise ConfigError(f"dbtest snapshot {action} needs a FILE")
        if action == "export":
            return f"exported {name} to {export_snapshot(server, name, path)}"
        info = import_snapshot(server, path, name, replace=replace)
        return f"imported {path} as {info.describe()}"
    raise ConfigError(f"unknown snapshot action {action!r}; use save, restore, list, drop, "
                      f"export or import")
