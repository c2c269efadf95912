"""The lock graph: who waits on whom, for which lock, running which statement.

Shown in every :class:`~dbtest.errors.ConcurrencyError` about a hung or stuck scenario, so
a failing test says what to reorder instead of only that it timed out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = ["lock_graph", "waits_for"]

# Every backend we were asked about, with what it waits for (ungranted locks) and who
# blocks it. pg_locks describes the lock; pg_blocking_pids names the holders.
_GRAPH_SQL = """
SELECT a.pid, coalesce(a.state, 'gone'), coalesce(a.wait_event_type, ''),
       coalesce(a.wait_event, ''), coalesce(a.query, ''),
       pg_blocking_pids(a.pid) || pg_safe_snapshot_blocking_pids(a.pid),
       (SELECT string_agg(l.mode || ' on ' ||
                CASE l.locktype
                  WHEN 'relation' THEN 'table ' || l.relation::regclass::text
                  WHEN 'tuple' THEN 'a row of ' || l.relation::regclass::text
                  WHEN 'transactionid' THEN 'a transaction (a row it changed)'
                  ELSE l.locktype END, ', ')
          FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)
  FROM pg_stat_activity a
 WHERE a.pid = ANY(%s)
 ORDER BY a.pid
"""

_WAITS_SQL = ("SELECT pid, pg_blocking_pids(pid) || pg_safe_snapshot_blocking_pids(pid) "
              "FROM unnest(%s::int[]) AS pid")


def waits_for(monitor: psycopg.Connection[Any], pids: list[int]) -> dict[int, list[int]]:
    """``pid -> pids blocking it`` (empty list: not waiting for a lock)."""
    if not pids:
        return {}
    rows = monitor.execute(_WAITS_SQL, (pids,), prepare=True).fetchall()
    return {int(pid): list(blockers or ()) for pid, blockers in rows}


def _shorten(query: str, limit: int = 200) -> str:
    text = " ".join(query.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def lock_graph(monitor: psycopg.Connection[Any], names: Mapping[int, str],
               notes: Mapping[int, str] | None = None) -> str:
    """Who waits on whom among the backends in ``names`` (pid -> readable name).

    ``notes`` adds a remark per backend (e.g. which step it is running). Backends outside
    ``names`` that block one of them are listed too, by pid.
    """
    notes = notes or {}
    try:
        rows = monitor.execute(_GRAPH_SQL, (list(names),)).fetchall()
    except Exception as exc:  # the graph is a diagnostic: never hide the real error behind it
        return f"  (lock graph unavailable: {exc})"
    found = {int(r[0]) for r in rows}
    outsiders = sorted({b for r in rows for b in (r[5] or ()) if b not in names})
    if outsiders:
        with contextlib.suppress(Exception):  # diagnostic only
            rows += monitor.execute(_GRAPH_SQL, (outsiders,)).fetchall()
    label = {pid: f"{name} (pid {pid})" for pid, name in names.items()}
    for pid in outsiders:
        label[pid] = f"another connection (pid {pid})"
    lines = []
    for pid, state, _wtype, _wevent, query, blockers, awaiting in rows:
        who = label.get(int(pid), f"pid {pid}")
        note = f" [{notes[pid]}]" if pid in notes else ""
        if blockers:
            holders = ", ".join(label.get(b, f"pid {b}") for b in blockers)
            lock = f"{awaiting} " if awaiting else ""
            lines.append(f"  {who}{note} waits for {lock}held by {holders}")
            lines.append(f"      running: {_shorten(query)}")
        else:
            verb = "running" if state == "active" else "last statement"
            lines.append(f"  {who}{note} is {state}")
            if query:
                lines.append(f"      {verb}: {_shorten(query)}")
    for pid, name in names.items():
        if pid not in found:
            lines.append(f"  {name} (pid {pid}) has no backend (disconnected)")
    return "\n".join(lines) if lines else "  (no backends)"
