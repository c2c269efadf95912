"""Snapshots as files: ``pg_dump -Fc`` out, ``pg_restore`` in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from dbtest._databases import admin_connection, create_database, database_mark, drop_database
from dbtest.errors import RefusedError, SnapshotError
from dbtest.snapshots._core import (
    SnapshotInfo,
    database_exists,
    known_snapshot,
    resolve_server,
    snapshot_db,
)

if TYPE_CHECKING:
    from dbtest.provision import PostgresServer

__all__ = ["export_snapshot", "import_snapshot", "pg_tool"]


def pg_tool(server: PostgresServer, tool: str) -> Path:
    """``pg_dump``/``pg_restore`` for ``server``: its own bindir, else PATH, else the newest
    install found, refusing one older than the server."""
    from dbtest.provision import discover_binaries

    bindir = server.details.get("bindir")
    candidates = [Path(bindir) / tool] if bindir else []
    found = shutil.which(tool)
    if found:
        candidates.append(Path(found))
    candidates += [b.tool(tool) for b in discover_binaries()]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK) and _major(path) >= server.major:
            return path
    raise SnapshotError(f"no {tool} of PostgreSQL {server.major or '?'} or newer found "
                        f"(looked in the server's bindir, PATH and the usual install "
                        f"folders). Install the PostgreSQL client tools (apt-get install "
                        f"postgresql-client).")


def _major(tool: Path) -> int:
    try:
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except OSError:
        return 0
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(m.group(1)) if m else 0


def _run_tool(args: list[str], server: PostgresServer, what: str, hint: str = "") -> None:
    env = dict(os.environ)
    if server.params.password:
        env["PGPASSWORD"] = server.params.password  # never on the command line
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise SnapshotError(f"{what} failed (exit {proc.returncode}): {tail}{hint}")


def _conninfo(server: PostgresServer, db: str) -> str:
    p = server.params
    return server.params.__class__(p.host, p.port, p.user, None, db).dsn()


def export_snapshot(server_or_url: PostgresServer | str, name: str, path: str | Path
                    ) -> Path:
    """Write snapshot ``name`` to ``path`` with ``pg_dump -Fc`` (a partial file never
    stays behind)."""
    server = _with_version(resolve_server(server_or_url))
    target = Path(path).expanduser().resolve()
    with admin_connection(server.dsn) as conn:
        snap = known_snapshot(conn, name)
    folder = target.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK) or target.is_dir():
        raise SnapshotError(f"cannot write {target}: {folder} is not a writable folder; create "
                            f"it or pick a writable folder" if not target.is_dir() else
                            f"cannot write {target}: a folder. Name a file, e.g. "
                            f"{target / (name + '.dump')}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    os.close(fd)
    try:
        _run_tool([str(pg_tool(server, "pg_dump")), "-Fc", "--no-owner", "-f", tmp, "-d",
                   _conninfo(server, snap.database)], server, f"pg_dump of snapshot {name!r}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def import_snapshot(server_or_url: PostgresServer | str, path: str | Path, name: str, *,
                    replace: bool = False) -> SnapshotInfo:
    """Load a ``pg_dump -Fc`` file as snapshot ``name`` (``pg_restore``, all or nothing)."""
    server = _with_version(resolve_server(server_or_url))
    source = Path(path).expanduser()
    if not source.is_file() or not os.access(source, os.R_OK):
        raise SnapshotError(f"cannot import {source}: no such readable file. Check the path.")
    db = snapshot_db(name)
    with admin_connection(server.dsn) as conn:
        if database_exists(conn, db):
            if database_mark(conn, db) is None:
                raise RefusedError(f"snapshot name {name!r} would use database {db!r}, which "
                                   f"exists and was not created by dbtest. Pick another name.")
            if not replace:
                raise SnapshotError(f"snapshot {name!r} already exists; drop it first or "
                                    f"pass replace=True (--replace)")
            drop_database(conn, db)
        create_database(conn, db, purpose="snapshot",
                        mark={"snapshot": name, "source": f"file {source.name}"})
        try:
            _run_tool([str(pg_tool(server, "pg_restore")), "--no-owner", "--exit-on-error",
                       "--single-transaction", "-d", _conninfo(server, db), str(source)],
                      server, f"pg_restore of {source}",
                      f". Check that {source.name} is a file written by dbtest snapshot export "
                      f"(pg_dump -Fc)")
        except BaseException:
            drop_database(conn, db)
            raise
        return known_snapshot(conn, name)


def _with_version(server: PostgresServer) -> PostgresServer:
    if server.version_num:
        return server
    with admin_connection(server.dsn) as conn:
        server.version_num = conn.info.server_version
    return server
