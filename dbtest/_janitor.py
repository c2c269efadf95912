"""What dbtest left on a server: databases of dead test processes and stale templates.

Only databases carrying dbtest's mark are ever considered. A worker or fresh database
whose owning run is gone is dropped at the next run's start; a template unused for
``max_age_days`` goes, except the ``keep`` most recently used.

Whether the owner is gone is asked of the server (see :mod:`dbtest._liveness`): a mark
with a run token belongs to a live run exactly while that run's advisory lock is held,
whatever host or pid namespace it runs in. Marks without a token (written by dbtest
versions before run tokens) keep the old rule: on the same host name, the pid must be
gone; from another host, the database must be a day old. A half-built template is left
alone while its build lock is held, and is dropped under that lock.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest._databases import drop_database, list_databases
from dbtest._liveness import TOKEN_KEY, held_run_keys, key_held, run_key, token_alive
from dbtest.provision import pid_alive

if TYPE_CHECKING:
    import psycopg

__all__ = ["StaleDatabase", "drop_stale", "stale_databases"]

#: databases of a test process: gone with their process (snapshots and restored
#: databases hold user data and are never cleaned)
_PER_PROCESS = ("worker", "fresh", "template-build", "migrations-check")


@dataclass(frozen=True)
class StaleDatabase:
    """A database dbtest made that nothing will use again."""

    name: str
    reason: str
    size_bytes: int
    #: advisory lock to hold while dropping it (a half-built template's build lock, or
    #: the dead run's own key, so that two janitors never drop the same database at once)
    lock: int | None = None


def _owner_gone(mark: dict[str, Any], host: str, now: float,
                held: set[tuple[int, int]]) -> str | None:
    token = mark.get(TOKEN_KEY)
    if isinstance(token, str):
        return None if token_alive(held, token) else f"its run {token} ended (lock released)"
    owner = str(mark.get("owner", ""))
    pid = mark.get("pid")
    if owner.endswith("@" + host) and isinstance(pid, int):
        return None if pid_alive(pid) else f"its test process {pid} is gone"
    if now - float(mark.get("created", now)) > 86400:
        return f"made by {owner or 'another host'} more than a day ago"
    return None


def stale_databases(conn: psycopg.Connection[Any], *, max_age_days: float = 7,
                    keep: int = 5, templates: bool = True) -> list[StaleDatabase]:
    """dbtest's databases on this server that can go (see the module docstring)."""
    from dbtest._templates import build_lock_key

    host, now = socket.gethostname(), time.time()
    found, kept_templates = [], []
    databases = list_databases(conn)
    held = held_run_keys(conn)  # read after the list: a run listed there is in it if alive
    for db in databases:
        mark = db.mark
        if mark is None:
            continue  # never touch a database dbtest did not make
        purpose = mark.get("purpose")
        if purpose == "template" and mark.get("state") == "building":
            if db.name.endswith("_build"):  # its builder holds the template's build lock
                key = build_lock_key(db.name[:-len("_build")])
                if not key_held(held, key):
                    found.append(StaleDatabase(db.name, "half-built template: its build "
                                               "ended", db.size_bytes, lock=key))
                continue
            purpose = "template-build"
        if purpose in _PER_PROCESS:
            why = _owner_gone(mark, host, now, held)
            if why:
                token = mark.get(TOKEN_KEY)
                lock = run_key(token) if isinstance(token, str) else None
                found.append(StaleDatabase(db.name, f"{purpose} database: {why}", db.size_bytes,
                                           lock=lock))
        elif purpose == "template" and templates:
            kept_templates.append((float(mark.get("used", mark.get("created", 0))), db))
    kept_templates.sort(key=lambda t: t[0], reverse=True)
    for used, db in kept_templates[keep:]:
        if now - used > max_age_days * 86400:
            days = (now - used) / 86400
            found.append(StaleDatabase(db.name, f"template unused for {days:.0f} days",
                                       db.size_bytes))
    return found


def drop_stale(conn: psycopg.Connection[Any], items: list[StaleDatabase]) -> list[str]:
    """Drop ``items``; returns the names that could not be dropped, with the reason."""
    failed = []
    for item in items:
        locked = False
        try:
            if item.lock is not None:
                # trying takes the lock when it is free: a builder starting now waits
                # for this drop, another janitor sees the dead run as busy and skips it;
                # released at once below
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (item.lock,)).fetchone()
                locked = bool(row and row[0])
                if not locked:
                    continue  # a build started meanwhile, or another janitor drops it
            drop_database(conn, item.name, wait=0.5)
        except Exception as exc:  # one stubborn database must not stop the rest
            failed.append(f"{item.name}: {exc}")
        finally:
            if locked:
                conn.execute("SELECT pg_advisory_unlock(%s)", (item.lock,))
    return failed
