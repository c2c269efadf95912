"""Saving, restoring, listing and dropping snapshots: template copies on the server."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest._databases import (
    admin_connection,
    create_database,
    database_mark,
    drop_database,
    mark_database,
    open_sessions,
    read_mark,
)
from dbtest.errors import ConfigError, DbtestError, RefusedError, SnapshotError, TemplateError

if TYPE_CHECKING:
    import psycopg

    from dbtest.provision import PostgresServer

__all__ = ["PREFIX", "RestoreReport", "SnapshotInfo", "drop_snapshot", "list_snapshots",
           "resolve_server", "restore_snapshot", "save_snapshot"]

PREFIX = "dbtest_snap_"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,49}$")


@dataclass(frozen=True)
class SnapshotInfo:
    """A saved snapshot."""

    name: str
    database: str
    source: str | None
    created: float | None
    size_bytes: int

    def describe(self) -> str:
        """One line: name, source, size and time."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created)) \
            if self.created else "?"
        return (f"{self.name}  from {self.source or '?'}  {self.size_bytes / 1e6:.1f} MB  "
                f"saved {when}")


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did."""

    snapshot: str
    database: str
    seconds: float
    #: where the database that was replaced lives on, when dbtest had not created it
    kept_original: str | None = None
    terminated: tuple[str, ...] = ()


def resolve_server(server_or_url: PostgresServer | str) -> PostgresServer:
    """A :class:`PostgresServer` for a server, a ``postgresql://`` URL or a libpq DSN."""
    from dbtest.provision import ConnectionParams, PostgresServer

    if isinstance(server_or_url, PostgresServer):
        return server_or_url
    text = str(server_or_url)
    if "://" in text:
        from dbtest.provision import parse_url

        params = parse_url(text)
    else:
        from psycopg.conninfo import conninfo_to_dict

        try:
            d = conninfo_to_dict(text)
        except Exception as exc:
            raise ConfigError(f"{text!r} is neither a postgresql:// URL nor a libpq DSN: "
                              f"{exc}") from None
        params = ConnectionParams(str(d.get("host") or "/var/run/postgresql"),
                                  int(d.get("port") or 5432), str(d.get("user") or "postgres"),
                                  str(d["password"]) if d.get("password") else None,
                                  str(d.get("dbname") or "postgres"))
    return PostgresServer(params, "", "url")


#: maintenance databases to work from, in order of preference
_MAINTENANCE = ("postgres", "template1")


def _admin(server: PostgresServer, *busy: str | None) -> Any:
    """An autocommit connection to a maintenance database that is none of ``busy``: a
    database cannot be copied, renamed or dropped from a session connected to it (so
    restoring into ``postgres`` works from ``template1``)."""
    dbname = next(d for d in _MAINTENANCE if d not in busy)
    return admin_connection(server.dsn, dbname)


def snapshot_db(name: str) -> str:
    """The database that holds snapshot *name*; a bad name is a SnapshotError."""
    if not _NAME.match(name):
        raise SnapshotError(f"snapshot name {name!r} is not valid: use 1-50 letters, digits, "
                            f"'_', '.' or '-'")
    return PREFIX + name


def _strategy(server: PostgresServer) -> str | None:
    # FILE_COPY is the fast copy on dbtest's own servers (fsync off); elsewhere the
    # default WAL_LOG avoids forcing checkpoints on someone's real server.
    return "file_copy" if server.backend in ("local", "embedded") else None


def _snapshots(conn: psycopg.Connection[Any], db: str | None = None) -> list[SnapshotInfo]:
    # only the snapshot databases: pg_database_size walks each database's files
    rows = conn.execute(
        "SELECT datname, shobj_description(oid, 'pg_database'), pg_database_size(oid) "
        "FROM pg_database WHERE starts_with(datname, %s) AND (%s::text IS NULL OR "
        "datname = %s) ORDER BY datname", (PREFIX, db, db)).fetchall()
    out = []
    for name, comment, size in rows:
        mark = read_mark(comment)
        if mark and mark.get("purpose") == "snapshot":
            out.append(SnapshotInfo(name[len(PREFIX):], name, mark.get("source"),
                                    mark.get("created"), int(size)))
    return out


def known_snapshot(conn: psycopg.Connection[Any], name: str) -> SnapshotInfo:
    """Snapshot *name* on this server, or a SnapshotError listing the ones there are."""
    found = _snapshots(conn, snapshot_db(name))
    if found:
        return found[0]
    names = ", ".join(s.name for s in _snapshots(conn)) or "none yet"
    raise SnapshotError(f"no snapshot named {name!r} on this server (snapshots: {names}). "
                        f"Save one with: dbtest snapshot save {name} --db DATABASE")


def _free_sessions(conn: psycopg.Connection[Any], db: str, force: bool, what: str
                   ) -> tuple[str, ...]:
    """Make sure ``db`` has no other sessions: wait briefly, then refuse or terminate."""
    deadline = time.monotonic() + 0.3  # closed clients' backends take a moment to exit
    sessions = open_sessions(conn, db)
    while sessions and time.monotonic() < deadline:
        time.sleep(0.005)
        sessions = open_sessions(conn, db)
    if not sessions:
        return ()
    if not force:
        raise SnapshotError(f"cannot {what}: database {db!r} has {len(sessions)} open "
                            f"session(s): " + "; ".join(sessions)
                            + ". Close them, or pass force=True (--force) to terminate them.")
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = %s AND pid <> pg_backend_pid()", (db,))
    deadline = time.monotonic() + 5
    while open_sessions(conn, db) and time.monotonic() < deadline:
        time.sleep(0.005)
    return tuple(sessions)


def database_exists(conn: psycopg.Connection[Any], db: str) -> bool:
    """Whether the server has a database named *db*."""
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() \
        is not None


def _unused_name(conn: psycopg.Connection[Any], name: str) -> str:
    candidate, n = name, 1
    while database_exists(conn, candidate):
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _copy(conn: psycopg.Connection[Any], server: PostgresServer, source: str, target: str,
          purpose: str, mark: dict[str, Any]) -> None:
    try:
        create_database(conn, target, purpose=purpose, template=source,
                        strategy=_strategy(server), mark=mark)
    except TemplateError:  # a session slipped in between the check and the copy
        raise SnapshotError(f"cannot copy {source!r}: new sessions connected to it: "
                            + "; ".join(open_sessions(conn, source))
                            + ". Close them, or pass force=True (--force).") from None


def save_snapshot(server_or_url: PostgresServer | str, source_db: str, name: str, *,
                  force: bool = False, replace: bool = False) -> SnapshotInfo:
    """Copy ``source_db`` into the snapshot ``name``.

    Sessions connected to ``source_db`` block the copy: they are named in the error, or
    terminated with ``force=True``. An existing snapshot of that name is replaced only
    with ``replace=True``.
    """
    server = resolve_server(server_or_url)
    db = snapshot_db(name)
    with _admin(server, source_db, db) as conn:
        if not database_exists(conn, source_db):
            raise SnapshotError(f"cannot save snapshot {name!r}: database {source_db!r} does "
                                f"not exist on this server. Pass an existing database (--db "
                                f"NAME, or the URL's database).")
        if database_exists(conn, db):
            mark = database_mark(conn, db)
            if mark is None:
                raise RefusedError(f"snapshot name {name!r} would use database {db!r}, which "
                                   f"exists and was not created by dbtest. Pick another name.")
            if not replace:
                raise SnapshotError(f"snapshot {name!r} already exists (from "
                                    f"{mark.get('source')}); drop it first (dbtest snapshot "
                                    f"drop {name}) or pass replace=True (--replace)")
            _free_sessions(conn, db, True, f"replace snapshot {name!r}")
            drop_database(conn, db)
        _free_sessions(conn, source_db, force, f"snapshot {source_db!r}")
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE "
                             "datname = %s", (source_db,)).fetchone()
        _copy(conn, server, source_db, db, "snapshot",
              {"snapshot": name, "source": source_db, "owner": owner[0] if owner else None})
        return known_snapshot(conn, name)


def restore_snapshot(server_or_url: PostgresServer | str, name: str, db: str | None = None,
                     *, force: bool = False) -> RestoreReport:
    """Make ``db`` (default: the snapshot's source) a copy of snapshot ``name`` again.

    The copy is made under a temporary name first, so a failure leaves ``db`` as it was.
    A ``db`` dbtest created is then dropped; one it did not create is renamed to
    ``<db>_pre_restore_<time>`` and kept. Sessions on ``db`` are named in the error, or
    terminated with ``force=True``.
    """
    started = time.perf_counter()
    server = resolve_server(server_or_url)
    import psycopg
    from psycopg import sql

    if db is None:
        with _admin(server) as conn:
            db = known_snapshot(conn, name).source
        if not db:
            raise SnapshotError(f"snapshot {name!r} does not record its source database; "
                                f"name the target with db=... (--db)")
    target = db
    with _admin(server, target) as conn:  # never from the database being replaced
        snap = known_snapshot(conn, name)
        mark = database_mark(conn, snap.database) or {}
        _free_sessions(conn, snap.database, True, f"restore from snapshot {name!r}")
        terminated: tuple[str, ...] = ()
        kept: str | None = None
        exists = database_exists(conn, target)
        if exists:
            terminated = _free_sessions(conn, target, force, f"restore over {target!r}")
        staging = f"{target[:40]}_dbtest_restoring"
        if database_exists(conn, staging):
            drop_database(conn, staging)  # left by a crashed restore; refuses if not ours
        _copy(conn, server, snap.database, staging, "restored",
              {"snapshot": name, "source": snap.source})
        try:
            if exists:
                _free_sessions(conn, target, force, f"restore over {target!r}")
                if database_mark(conn, target) is None:
                    kept = _unused_name(conn, f"{target[:40]}_pre_restore_"
                                                  f"{time.strftime('%Y%m%d%H%M%S')}")
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(target), sql.Identifier(kept)))
                else:
                    drop_database(conn, target, force=False, wait=0.5)
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(staging), sql.Identifier(target)))
        except (DbtestError, psycopg.Error) as exc:
            drop_database(conn, staging)
            if isinstance(exc, SnapshotError):
                raise
            raise SnapshotError(f"restore of {name!r} into {target!r} failed, {target!r} is "
                                f"unchanged: {str(exc).strip()}") from None
        mark_database(conn, target, purpose="restored",
                      mark={"snapshot": name, "source": snap.source})
        owner = mark.get("owner")
        if owner:
            # the role may not exist on this server, or we may not be allowed: keep ours
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(target), sql.Identifier(owner)))
    return RestoreReport(name, target, time.perf_counter() - started, kept, terminated)


def list_snapshots(server_or_url: PostgresServer | str) -> list[SnapshotInfo]:
    """Every snapshot on the server, by name, with source, size and time."""
    with _admin(resolve_server(server_or_url)) as conn:
        return _snapshots(conn)


def drop_snapshot(server_or_url: PostgresServer | str, name: str, *, force: bool = True
                  ) -> None:
    """Drop snapshot ``name`` (sessions on it are terminated unless ``force=False``)."""
    with _admin(resolve_server(server_or_url)) as conn:
        snap = known_snapshot(conn, name)
        _free_sessions(conn, snap.database, force, f"drop snapshot {name!r}")
        drop_database(conn, snap.database)
