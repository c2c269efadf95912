"""What dbtest left on a server: databases of dead test processes and stale templates.

Only databases carrying dbtest's mark are ever considered. A worker or fresh database
whose owning process (on this host) is gone is dropped at the next run's start; a
template unused for ``max_age_days`` goes, except the ``keep`` most recently used.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest.databases import drop_database, list_databases
from dbtest.provision.lifetime import pid_alive

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


def _owner_gone(mark: dict[str, Any], host: str, now: float) -> str | None:
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
    host, now = socket.gethostname(), time.time()
    found, kept_templates = [], []
    for db in list_databases(conn):
        mark = db.mark
        if mark is None:
            continue  # never touch a database dbtest did not make
        purpose = mark.get("purpose")
        if purpose == "template" and mark.get("state") == "building":
            purpose = "template-build"
        if purpose in _PER_PROCESS:
            why = _owner_gone(mark, host, now)
            if why:
                found.append(StaleDatabase(db.name, f"{purpose} database: {why}", db.size_bytes))
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
        try:
            drop_database(conn, item.name, wait=0.5)
        except Exception as exc:  # one stubborn database must not stop the rest
            failed.append(f"{item.name}: {exc}")
    return failed
