"""Which test runs on a server are alive, seen from the server itself.

A run's host name and pid say nothing on a server shared by CI runners in containers:
they often share a host name and have the same small pids in their own pid namespaces.
So each pytest process (each xdist worker) holds a :class:`RunLease`: a session-level
advisory lock keyed by a random run token, taken on its admin connection before it
creates any database and held until the end of the run. The token goes into the mark
of every worker and fresh database the process creates. When the process dies, however
(``kill -9``, a lost runner, an OOM kill), the server closes its session and releases
the lock; the janitor of any later run, on any host, then sees the lock free and drops
the databases. While the lock is held nothing marked with its token is touched.

A lease's lock is never taken again once released (every lease has a new token), so
"free" means "dead for good" and reading ``pg_locks`` is enough; nothing is acquired.

The lease needs the same server session for the whole run: point ``DBTEST_URL`` at the
server or at a pooler in *session* mode (transaction pooling would hand the lock's
session to other clients).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest.errors import ProvisionError, mask_url

if TYPE_CHECKING:
    import psycopg

__all__ = ["CONNECTIONS_PER_WORKER", "ConnectionBudget", "RunLease", "check_budget",
           "check_url_budget", "held_run_keys", "key_held", "run_key", "token_alive"]

#: mark key that carries the owning run's token
TOKEN_KEY = "run"

#: server connections one pytest process (the main one, or each xdist worker) keeps open:
#: its lease, its admin connection (clones, drops, the janitor), the worker database's
#: connection behind ``db``, and one for a ``fresh_db`` test's engine or the async
#: fixtures; the template's builder two more while it builds. See docs/ci.md
#: "Connection budget".
CONNECTIONS_PER_WORKER = 4


def run_key(token: str) -> int:
    """The signed 64-bit advisory lock key of a run token (16 hex digits)."""
    return int.from_bytes(bytes.fromhex(token)[:8], "big", signed=True)


def _split(key: int) -> tuple[int, int]:
    """``pg_locks``' (classid, objid) of a single-bigint advisory lock key."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def held_run_keys(conn: psycopg.Connection[Any]) -> set[tuple[int, int]]:
    """(classid, objid) of every single-key advisory lock granted on the server, in any
    database; compare with ``_split(run_key(token))``. Reading ``pg_locks`` takes no lock."""
    rows = conn.execute("SELECT classid::bigint, objid::bigint FROM pg_locks "
                        "WHERE locktype = 'advisory' AND objsubid = 1 AND granted").fetchall()
    return {(int(c), int(o)) for c, o in rows}


def key_held(held: set[tuple[int, int]], key: int) -> bool:
    """Whether advisory lock ``key`` is in ``held`` (from :func:`held_run_keys`)."""
    return _split(key) in held


def token_alive(held: set[tuple[int, int]], token: str) -> bool:
    """Whether the run that owns ``token`` still holds its lease (``held`` from
    :func:`held_run_keys`); a malformed token counts as alive (never drop on doubt)."""
    try:
        return key_held(held, run_key(token))
    except ValueError:
        return True


class RunLease:
    """A connection that holds this run's liveness lock, and does nothing else: an error
    that ends a session (``ALTER DATABASE`` on a database another session is dropping is
    FATAL) must never end the run's liveness while the run goes on."""

    def __init__(self, dsn: str) -> None:
        from dbtest._databases import admin_connect

        self.token = secrets.token_hex(8)
        self.conn = admin_connect(dsn, application_name=f"dbtest run {self.token}")
        try:
            # a lease must outlive idle stretches of the run (PostgreSQL 14+ setting)
            if self.conn.info.server_version >= 140000:
                self.conn.execute("SET idle_session_timeout = 0")
            self.conn.execute("SELECT pg_advisory_lock(%s)", (run_key(self.token),))
        except BaseException:
            self.conn.close()
            raise

    @property
    def mark(self) -> dict[str, str]:
        """What goes into the mark of every database this run creates."""
        return {TOKEN_KEY: self.token}

    @property
    def closed(self) -> bool:
        return bool(self.conn.closed)

    def close(self) -> None:
        """Release the lock (by ending the session). Call after dropping this run's
        databases: from now on the janitor of any run may drop what is left."""
        self.conn.close()


@dataclass(frozen=True)
class ConnectionBudget:
    """How many connections a server lets this role open, and how many are in use."""

    max_connections: int
    reserved: int  # superuser_reserved_connections (+ reserved_connections, PG 16+)
    superuser: bool
    role_limit: int  # rolconnlimit, -1 = none
    in_use: int

    @property
    def available(self) -> int:
        """Connections a run of this role can ever have at once on an idle server."""
        total = self.max_connections - (0 if self.superuser else self.reserved)
        if self.role_limit >= 0 and not self.superuser:
            total = min(total, self.role_limit)
        return total


def read_budget(conn: psycopg.Connection[Any]) -> ConnectionBudget:
    """The server's connection limits, as seen by ``conn``'s role."""
    row = conn.execute(
        "SELECT current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int + "
        "coalesce(current_setting('reserved_connections', true)::int, 0), "
        "r.rolsuper, r.rolconnlimit, "
        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int "
        "FROM pg_roles r WHERE r.rolname = current_user").fetchone()
    assert row is not None
    return ConnectionBudget(*row)


def check_budget(conn: psycopg.Connection[Any], workers: int, dsn: str) -> ConnectionBudget:
    """Raise :class:`ProvisionError` when the server cannot hold ``workers`` processes
    of this run at :data:`CONNECTIONS_PER_WORKER` connections each (plus the template
    builder's two), whatever else is connected."""
    budget = read_budget(conn)
    need = workers * CONNECTIONS_PER_WORKER + 2
    if need > budget.available:
        fit = (budget.available - 2) // CONNECTIONS_PER_WORKER
        fewer = f"run with at most {fit} worker(s) (pytest -n {fit}), or " if fit > 0 else ""
        short = need - budget.available
        role_bound = (not budget.superuser and 0 <= budget.role_limit
                      < budget.max_connections - budget.reserved)
        raise_it = (f"raise the role's limit (ALTER ROLE {conn.info.user} CONNECTION LIMIT "
                    f"{budget.role_limit + short})" if role_bound else
                    f"raise max_connections on the server (ALTER SYSTEM SET max_connections = "
                    f"{budget.max_connections + short}; then restart it)")
        limit = (f"max_connections = {budget.max_connections}"
                 + ("" if budget.superuser else f", {budget.reserved} reserved for superusers")
                 + (f", role limit {budget.role_limit}" if budget.role_limit >= 0
                    and not budget.superuser else ""))
        raise ProvisionError(
            f"the server at {mask_url(dsn)} allows this role {budget.available} connections "
            f"({limit}); a run with {workers} worker(s) needs about {need} "
            f"({CONNECTIONS_PER_WORKER} per worker: its liveness lock, its admin "
            f"connection, the `db` connection and one for fresh_db/async fixtures, plus 2 "
            f"for the template build). Fix: {fewer}{raise_it}.")
    return budget


def check_url_budget(url: str, workers: int) -> None:
    """The budget check for a whole xdist run on a ``url`` server, from the controller
    before any worker starts: one clear error instead of one per test. A server that does
    not answer is left for the workers to report."""
    from dbtest._databases import admin_connect
    from dbtest.provision import parse_url

    dsn = parse_url(url).dsn()
    try:
        conn = admin_connect(dsn)
    except ProvisionError:
        return
    try:
        check_budget(conn, workers, url)
    finally:
        conn.close()
