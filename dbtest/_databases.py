"""Create, mark, list and drop databases: dbtest drops only what it created and marked.

Every database dbtest creates carries a ``COMMENT ON DATABASE`` starting with
``dbtest:`` followed by JSON (owner, purpose, time). Anything without that mark is
refused with :class:`~dbtest.errors.RefusedError`.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest.errors import (
    DbtestError,
    MaskedStr,
    ProvisionError,
    RefusedError,
    TemplateError,
    mask_url,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["MARK_PREFIX", "DatabaseInfo", "DropReport", "admin_connect", "admin_connection",
           "create_database", "drop_database", "list_databases", "mark_database", "read_mark"]

MARK_PREFIX = "dbtest:"
#: longest database name PostgreSQL keeps (NAMEDATALEN - 1)
MAX_NAME = 63


@dataclass(frozen=True)
class DatabaseInfo:
    """A database on a server, with dbtest's mark when it has one."""

    name: str
    mark: dict[str, Any] | None
    size_bytes: int
    is_template: bool


@dataclass(frozen=True)
class DropReport:
    """What dropping a database took: connections that had to be terminated."""

    name: str
    forced: tuple[str, ...] = ()


def admin_connect(dsn: str, dbname: str = "postgres", *,
                  application_name: str | None = None) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection to the maintenance database of ``dsn``'s server
    (the caller closes it); connection failures become a clear :class:`ProvisionError`."""
    import psycopg

    dsn = MaskedStr(dsn)  # a traceback's locals show it masked
    extra: dict[str, Any] = {"application_name": application_name} if application_name else {}
    try:
        return psycopg.connect(dsn, dbname=dbname, autocommit=True, connect_timeout=10,
                               **extra)
    except psycopg.OperationalError as exc:
        # libpq's message spans lines ("\n\tIs the server running...?"): one line here
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if "too many" in reason or "remaining connection slots" in reason:
            raise ProvisionError(
                f"the server at {mask_url(dsn)} has no connection left for this role "
                f"({reason.rstrip('.')}). Other runs (CI shards, xdist workers) use them all: "
                f"run fewer at once, use fewer workers per run, or raise max_connections or "
                f"the role's CONNECTION LIMIT (see docs/ci.md, \"Connection budget\").") \
                from None
        raise ProvisionError(f"cannot connect to {mask_url(dsn)} (database {dbname!r}): "
                             f"{reason.rstrip('?.')}. Check that the server runs and that the "
                             f"host, port, user and password are right.") from None


@contextmanager
def admin_connection(dsn: str, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection to the maintenance database of ``dsn``'s server."""
    conn = admin_connect(dsn, dbname)
    try:
        yield conn
    finally:
        conn.close()


def _mark_text(purpose: str, extra: dict[str, Any] | None) -> str:
    mark = {"purpose": purpose, "owner": f"{getpass.getuser()}@{socket.gethostname()}",
            "pid": os.getpid(), "created": round(time.time(), 3), **(extra or {})}
    return MARK_PREFIX + json.dumps(mark, sort_keys=True)


def read_mark(comment: str | None) -> dict[str, Any] | None:
    """Parse a database comment; ``None`` when the database is not dbtest's."""
    if not comment or not comment.startswith(MARK_PREFIX):
        return None
    try:
        value = json.loads(comment[len(MARK_PREFIX):])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _check_name(name: str) -> None:
    if not name or len(name.encode()) > MAX_NAME:
        raise DbtestError(f"database name {name!r} must be 1-{MAX_NAME} bytes long")


def create_database(conn: psycopg.Connection[Any], name: str, *, purpose: str,
                    template: str | None = None, mark: dict[str, Any] | None = None,
                    strategy: str | None = None) -> None:
    """``CREATE DATABASE name [TEMPLATE t]`` and mark it as dbtest's.

    ``strategy="file_copy"`` (PostgreSQL 15+) copies small templates faster than the
    default WAL_LOG because fsync is off on dbtest's own servers.
    """
    import psycopg
    from psycopg import sql

    _check_name(name)
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    if strategy and conn.info.server_version >= 150000:
        query += sql.SQL(" STRATEGY {}").format(sql.SQL(strategy.upper()))
    try:
        conn.execute(query)
    except psycopg.errors.DuplicateDatabase:
        raise DbtestError(f"database {name!r} already exists on the server; dbtest will not "
                          f"reuse it. Drop it or pick another name.") from None
    except psycopg.errors.ObjectInUse as exc:
        raise TemplateError(f"cannot clone template {template!r}: {str(exc).strip()}. "
                            f"Close the connections to the template database.") from None
    except psycopg.errors.InsufficientPrivilege:
        raise DbtestError(f"the role {conn.info.user!r} may not create databases; grant it "
                          f"CREATEDB (ALTER ROLE {conn.info.user} CREATEDB).") from None
    mark_database(conn, name, purpose=purpose, mark=mark)


def mark_database(conn: psycopg.Connection[Any], name: str, *, purpose: str,
                  mark: dict[str, Any] | None = None) -> None:
    """(Re)write dbtest's mark on ``name``."""
    from psycopg import sql

    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier(name), sql.Literal(_mark_text(purpose, mark))))


def list_databases(conn: psycopg.Connection[Any]) -> list[DatabaseInfo]:
    """All databases on the server with their dbtest mark (``None`` for foreign ones)."""
    rows = conn.execute(
        "SELECT datname, shobj_description(oid, 'pg_database'), "
        "pg_database_size(oid), datistemplate FROM pg_database "
        "WHERE datallowconn ORDER BY datname").fetchall()
    return [DatabaseInfo(name, read_mark(comment), size, is_tpl)
            for name, comment, size, is_tpl in rows]


def database_mark(conn: psycopg.Connection[Any], name: str) -> dict[str, Any] | None:
    """dbtest's mark on ``name``; raises when the database does not exist."""
    row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                       "WHERE datname = %s", (name,)).fetchone()
    if row is None:
        raise DbtestError(f"database {name!r} does not exist on this server")
    return read_mark(row[0])


def open_sessions(conn: psycopg.Connection[Any], name: str) -> list[str]:
    """Other sessions on database *name*, one readable line each (pid, app, state, query)."""
    rows = conn.execute(
        "SELECT pid, coalesce(application_name, ''), state, left(query, 60) "
        "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,)).fetchall()
    return [f"pid {pid} ({app or 'no name'}, {state}): {query}" for pid, app, state, query in rows]




def drop_database(conn: psycopg.Connection[Any], name: str, *, force: bool = True,
                  wait: float = 2.0) -> DropReport:
    """Drop a database dbtest marked as its own; refuse anything else.

    Closed clients' backends take a moment to leave ``pg_stat_activity``; DROP would
    sleep ~100 ms on them, so wait for them first (up to ``wait`` seconds). Sessions
    still connected after that are terminated when ``force`` (and reported), else the
    drop is refused naming them.
    """
    from psycopg import sql

    if database_mark(conn, name) is None:
        raise RefusedError(f"refusing to drop database {name!r}: dbtest did not create it "
                           f"(it has no dbtest mark). Drop it yourself if you mean it.")
    deadline = time.monotonic() + wait
    sessions = open_sessions(conn, name)
    while sessions and time.monotonic() < deadline:
        time.sleep(0.002)
        sessions = open_sessions(conn, name)
    if sessions and not force:
        raise DbtestError(f"database {name!r} still has open connections: "
                          + "; ".join(sessions))
    # only a valid template needs this: ALTER on a database another session is dropping
    # (marked invalid, datconnlimit -2) is FATAL, ending this connection's session
    row = conn.execute("SELECT datistemplate AND datconnlimit <> -2 FROM pg_database "
                       "WHERE datname = %s", (name,)).fetchone()
    if row is not None and row[0]:
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(
            sql.Identifier(name)))
    query = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    if sessions:
        query += sql.SQL(" WITH (FORCE)")
    conn.execute(query)
    return DropReport(name, tuple(sessions))
