"""Rows inserted, updated and deleted per table during a block, for bulk operations.

>>> with dbtest.track_changes(db) as changes:                      # doctest: +SKIP
...     db.execute(insert(User), rows)
>>> changes.inserted("users")                                     # doctest: +SKIP
100
>>> assert changes == {"users": Inserted(100)}                   # doctest: +SKIP

The counts come from ``pg_stat_xact_user_tables``, which PostgreSQL keeps per transaction
and which therefore sees the test's own uncommitted work, at the cost of two catalog
queries per block. What that implies (each is tested):

* Work inside a savepoint (``begin_nested()``, or ``commit()`` under the ``db`` fixture,
  which releases a savepoint) is counted.
* Work in a savepoint that was **rolled back** is still counted: PostgreSQL counts attempted
  row operations. The :class:`ChangeCounts` says how many savepoints were rolled back during
  the block, and failure messages mention it.
* The block must stay inside one transaction: a real ``COMMIT`` resets the counters, so
  :func:`track_changes` raises :class:`~dbtest.errors.ConfigError` when the transaction (or
  the backend) changed between start and end. Use the ``db`` fixture's savepoint isolation.
* Counts are row operations, not net changes: a row inserted and then deleted counts once in
  each. ``TRUNCATE`` is not counted as deletes, and PostgreSQL zeroes the table's counters
  for the transaction, so only operations after it are counted. Changes to a partitioned
  table count on its partitions.
* Pending ORM changes are flushed when the block starts (not counted) and when it ends
  (counted). The schema ``dbtest_internal`` (leak detection) is never reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtest._leaks import INTERNAL_SCHEMA
from dbtest.assertions import _render
from dbtest.assertions._db import connection_of, is_async, query, split_name
from dbtest.errors import ConfigError, DbAssertionError

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["ChangeCounts", "Deleted", "Inserted", "TableChanges", "Updated", "assertrepr_compare",
           "track_changes"]


class TableChanges:
    """Row operations on one table: ``inserted``, ``updated``, ``deleted``.

    Values add up: ``Inserted(3) + Updated(1)``. Any two compare equal when their three
    counts do, whatever their class.
    """

    __slots__ = ("deleted", "inserted", "updated")

    def __init__(self, inserted: int = 0, updated: int = 0, deleted: int = 0) -> None:
        for name, value in (("inserted", inserted), ("updated", updated), ("deleted", deleted)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{type(self).__name__}: {name} must be an int >= 0, "
                                  f"got {value!r}.")
        self.inserted = inserted
        self.updated = updated
        self.deleted = deleted

    def _key(self) -> tuple[int, int, int]:
        return self.inserted, self.updated, self.deleted

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TableChanges):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __add__(self, other: TableChanges) -> TableChanges:
        if not isinstance(other, TableChanges):
            return NotImplemented
        return TableChanges(self.inserted + other.inserted, self.updated + other.updated,
                            self.deleted + other.deleted)

    def __bool__(self) -> bool:
        return any(self._key())

    def __repr__(self) -> str:
        parts = [f"{cls}({n})" for cls, n in (("Inserted", self.inserted),
                                              ("Updated", self.updated),
                                              ("Deleted", self.deleted)) if n]
        return " + ".join(parts) if parts else "TableChanges()"


class Inserted(TableChanges):
    """``n`` rows inserted (and none updated or deleted)."""

    __slots__ = ()

    def __init__(self, n: int) -> None:
        super().__init__(inserted=n)


class Updated(TableChanges):
    """``n`` rows updated (and none inserted or deleted)."""

    __slots__ = ()

    def __init__(self, n: int) -> None:
        super().__init__(updated=n)


class Deleted(TableChanges):
    """``n`` rows deleted (and none inserted or updated)."""

    __slots__ = ()

    def __init__(self, n: int) -> None:
        super().__init__(deleted=n)


_NONE = TableChanges()


@dataclass(eq=False)
class ChangeCounts(Mapping[str, TableChanges]):
    """The tables changed during a :func:`track_changes` block (filled in when it ends).

    A read-only mapping of table name -> :class:`TableChanges` holding only the tables with
    changes. ``changes == {"users": Inserted(100)}`` holds when exactly those tables
    changed by exactly those counts (a kind not named must be 0). Use
    :meth:`assert_equal` for a failure message that tabulates the difference.
    """

    _changes: dict[str, TableChanges] = field(default_factory=dict)
    _tables: dict[tuple[str | None, str], str] = field(default_factory=dict)
    rolled_back_savepoints: int = 0
    """Savepoints rolled back inside the block; their row operations are still counted."""
    done: bool = False

    # -- lookups -------------------------------------------------------------------------
    def _name(self, table: Any) -> str:
        if not self.done:
            raise ConfigError("track_changes: the counts are known when the block has ended; "
                              "read them after the `with` block.")
        schema, name = split_name(table, helper="track_changes")
        found = self._tables.get((schema, name))
        if found is None:
            known = ", ".join(sorted(set(self._tables.values()))) or "(none)"
            wanted = name if schema is None else f"{schema}.{name}"
            raise ConfigError(f"track_changes: no table {wanted!r} in this database. "
                              f"Tables: {known}. Check the table name.")
        return found

    def of(self, table: Any) -> TableChanges:
        """The :class:`TableChanges` of ``table`` (name, ``Table`` or mapped class)."""
        return self._changes.get(self._name(table), _NONE)

    def inserted(self, table: Any) -> int:
        """Rows inserted into ``table`` during the block."""
        return self.of(table).inserted

    def updated(self, table: Any) -> int:
        """Rows updated in ``table`` during the block."""
        return self.of(table).updated

    def deleted(self, table: Any) -> int:
        """Rows deleted from ``table`` during the block."""
        return self.of(table).deleted

    # -- Mapping -------------------------------------------------------------------------
    def __getitem__(self, table: str) -> TableChanges:
        return self._changes[self._name(table)]

    def __contains__(self, table: object) -> bool:
        try:
            return self._name(table) in self._changes
        except ConfigError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._changes)

    def __len__(self) -> int:
        return len(self._changes)

    # -- comparison ----------------------------------------------------------------------
    def _normalize(self, expected: Mapping[Any, Any]) -> dict[str, TableChanges]:
        out: dict[str, TableChanges] = {}
        for table, value in expected.items():
            if isinstance(value, list | tuple | set | frozenset):
                total = _NONE
                for part in value:
                    total = total + self._value(table, part)
                value = total
            out[self._name(table)] = out.get(self._name(table), _NONE) + self._value(table, value)
        return out

    @staticmethod
    def _value(table: Any, value: Any) -> TableChanges:
        if not isinstance(value, TableChanges):
            raise ConfigError(f"track_changes: expected changes of {table!r} must be "
                              f"Inserted(n), Updated(n), Deleted(n) or a sum of them, got "
                              f"{value!r}.")
        return value

    def _differences(self, expected: Mapping[Any, Any]) -> list[tuple[str, TableChanges,
                                                                      TableChanges]]:
        want = self._normalize(expected)
        names = list(dict.fromkeys([*want, *self._changes]))
        return [(n, want.get(n, _NONE), self._changes.get(n, _NONE)) for n in names
                if want.get(n, _NONE) != self._changes.get(n, _NONE)]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChangeCounts):
            return self._changes == other._changes
        if isinstance(other, Mapping):
            return not self._differences(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def explain(self, expected: Mapping[Any, Any]) -> str:
        """The difference from ``expected`` as a table (empty string when equal)."""
        diffs = self._differences(expected)
        if not diffs:
            return ""
        rows: list[list[Any]] = []
        labels: list[str] = []
        marks: list[tuple[int, int]] = []
        for name, want, have in diffs:
            for label, value in (("expected", want), ("actual", have)):
                rows.append([name, value.inserted, value.updated, value.deleted])
                labels.append(label)
            for k, (a, b) in enumerate(zip(want._key(), have._key(), strict=True), start=1):
                if a != b:
                    marks.extend([(len(rows) - 2, k), (len(rows) - 1, k)])
        text = _render.table(["table", "inserted", "updated", "deleted"], rows, marked=marks,
                             prefixes=labels, limit=None)
        if self.rolled_back_savepoints:
            text += (f"\n  note: {self.rolled_back_savepoints} savepoint(s) were rolled back in "
                     f"the block; PostgreSQL still counts the rows they had changed.")
        return text

    def assert_equal(self, expected: Mapping[Any, Any]) -> None:
        """Raise :class:`~dbtest.errors.DbAssertionError` with a table unless equal."""
        __tracebackhide__ = True
        text = self.explain(expected)
        if text:
            raise DbAssertionError(f"track_changes: the changes differ from the expected "
                                   f"ones:\n{text}")

    def __repr__(self) -> str:
        if not self.done:
            return "ChangeCounts(<block still running>)"
        return f"ChangeCounts({self._changes!r})"


def assertrepr_compare(op: str, left: Any, right: Any) -> list[str] | None:
    """For pytest's ``pytest_assertrepr_compare`` hook: explain ``changes == {...}``."""
    if op != "==":
        return None
    for mine, other in ((left, right), (right, left)):
        if isinstance(mine, ChangeCounts) and isinstance(other, Mapping) and mine.done:
            try:
                text = mine.explain(other)
            except ConfigError as exc:
                return ["track_changes comparison failed:", str(exc)]
            return ["the changes differ from the expected ones:", *text.splitlines()]
    return None


# -- the context manager -------------------------------------------------------------------
# pg_stat_xact_user_tables calls ten functions per table; three are enough here
_STATS_SQL = f"""
SELECT m.pid, m.xact_start, m.counting, s.*
FROM (SELECT pg_backend_pid() AS pid, now() AS xact_start,
             current_setting('track_counts') AS counting) m
LEFT JOIN (SELECT n.nspname, c.relname, pg_table_is_visible(c.oid),
                  pg_stat_get_xact_tuples_inserted(c.oid), pg_stat_get_xact_tuples_updated(c.oid),
                  pg_stat_get_xact_tuples_deleted(c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'm') AND n.nspname <> '{INTERNAL_SCHEMA}'
             AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND n.nspname !~ '^pg_toast') s ON true
"""


@dataclass
class StatsSnapshot:
    """This backend's per-table row counters (pg_stat_xact_*) at one moment."""

    pid: int
    xact_start: Any
    tables: dict[tuple[str, str], tuple[bool, int, int, int]]


def stats_snapshot(conn: Connection) -> StatsSnapshot:
    """Read the row counters of every user table in *conn*'s current transaction."""
    rows = query(conn, _STATS_SQL).all()
    pid, start, counting = rows[0][:3]
    if counting != "on":
        raise ConfigError("track_changes: the server has track_counts = off, so PostgreSQL "
                          "counts no row operations. Turn it on (ALTER SYSTEM SET "
                          "track_counts = on) or use dbtest's own server.")
    tables = {(r[3], r[4]): (bool(r[5]), int(r[6]), int(r[7]), int(r[8]))
              for r in rows if r[3] is not None}
    return StatsSnapshot(pid, start, tables)


class track_changes:
    """Count the rows inserted, updated and deleted per table during a block.

    ``db`` is a ``Session`` or ``Connection`` (``with``), or an ``AsyncSession`` /
    ``AsyncConnection`` (``async with``). Yields a :class:`ChangeCounts`, filled in when the
    block ends. See the module documentation for what PostgreSQL's counters imply.
    """

    def __init__(self, db: Any) -> None:
        self._db = db
        self._changes = ChangeCounts()
        self._before: StatsSnapshot | None = None
        self._engine: Any = None

    # sync
    def __enter__(self) -> ChangeCounts:
        if is_async(self._db):
            raise ConfigError("track_changes(): an async session or connection needs "
                              "`async with dbtest.track_changes(async_db) as changes:`.")
        self._start(self._sync_handle(self._db))
        return self._changes

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        __tracebackhide__ = True
        self._stop_listening()
        if exc_type is None:
            self._finish(self._sync_handle(self._db))

    # async
    async def __aenter__(self) -> ChangeCounts:
        if not is_async(self._db):
            raise ConfigError("track_changes(): use `with`, not `async with`, for a sync "
                              "session or connection.")
        await self._db.run_sync(self._start)
        return self._changes

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        __tracebackhide__ = True
        self._stop_listening()
        if exc_type is None:
            await self._db.run_sync(self._finish)

    # work
    @staticmethod
    def _sync_handle(db: Any) -> Any:
        from sqlalchemy import Connection
        from sqlalchemy.orm import Session

        if isinstance(db, Session | Connection):
            return db
        raise ConfigError(f"track_changes() needs a Session or Connection (sync or async), "
                          f"got {type(db).__name__}. Pass the db or db_connection fixture.")

    def _start(self, db: Any) -> None:
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        if isinstance(db, Session):
            db.flush()
        conn = connection_of(db)
        self._before = stats_snapshot(conn)
        self._engine = conn.engine
        event.listen(self._engine, "rollback_savepoint", self._on_rollback_savepoint)

    def _on_rollback_savepoint(self, *args: Any) -> None:
        self._changes.rolled_back_savepoints += 1

    def _stop_listening(self) -> None:
        from sqlalchemy import event

        if self._engine is not None:
            event.remove(self._engine, "rollback_savepoint", self._on_rollback_savepoint)
            self._engine = None

    def _finish(self, db: Any) -> None:
        __tracebackhide__ = True
        from sqlalchemy.orm import Session

        if isinstance(db, Session):
            db.flush()
        after = stats_snapshot(connection_of(db))
        before = self._before
        assert before is not None  # _start ran
        if (after.pid, after.xact_start) != (before.pid, before.xact_start):
            raise ConfigError("track_changes: the transaction ended inside the block (a real "
                              "COMMIT or ROLLBACK, or the session moved to another connection), "
                              "and PostgreSQL's per-transaction counters started over. Keep "
                              "the block inside one transaction, e.g. with the db fixture, "
                              "whose commit() only releases a savepoint.")
        result = self._changes
        for (schema, name), (visible, ins, upd, dele) in after.tables.items():
            shown = name if visible else f"{schema}.{name}"
            result._tables[(schema, name)] = shown
            if visible:
                result._tables.setdefault((None, name), shown)
            _, ins0, upd0, del0 = before.tables.get((schema, name), (visible, 0, 0, 0))
            # TRUNCATE zeroes a table's counters for the transaction: count from there
            delta = TableChanges(max(ins - ins0, 0), max(upd - upd0, 0), max(dele - del0, 0))
            if delta:
                result._changes[shown] = delta
        result.done = True
