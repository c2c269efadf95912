"""What deleting one row does to the rest of the database, checked and then undone.

>>> dbtest.assert_cascade(db, user, expect={"posts": 1, "comments": 2})      # doctest: +SKIP
>>> dbtest.assert_cascade(db, ("users", 7), expect={"posts": 1})             # doctest: +SKIP
>>> dbtest.assert_cascade(db, product, blocked=True)                          # doctest: +SKIP

The delete runs inside a savepoint that is always rolled back, so the test's data is
untouched. Per table it records the rows deleted and the rows updated (``ON DELETE SET NULL``
/ ``SET DEFAULT``, or the ORM nulling a foreign key), read from PostgreSQL's
per-transaction counters (``pg_stat_xact_user_tables``), and compares them with ``expect``
(table -> rows deleted) and ``set_null`` (table -> rows updated). Tables named in neither
must be untouched; the deleted row itself is not counted.

Two ways to delete, reported separately:

* ``"orm"``: ``session.delete(obj)`` + ``flush()`` - relationship cascades and
  ``passive_deletes`` decide what the ORM loads, deletes or nulls before the database's
  ``ON DELETE`` rules act;
* ``"database"``: ``DELETE FROM table WHERE pk = ...`` - only the ``ON DELETE`` rules act.

An ORM object is checked both ways by default (``via="both"``): when the two disagree, one of
them does not do what ``expect`` says. A ``(table, pk)`` target is checked in the database.
A delete refused by a ``RESTRICT`` / ``NO ACTION`` foreign key (or failing otherwise) is a
failure naming the constraint, unless ``blocked=`` says it should be refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, overload

from dbtest.assertions import _render
from dbtest.assertions._changes import StatsSnapshot, stats_snapshot
from dbtest.assertions._db import TableInfo, connection_of, resolve_table, run, split_name
from dbtest.assertions._delete import (
    Blocked,
    CascadeResult,
    Target,
    db_delete,
    measure,
    orm_delete,
)
from dbtest.assertions._fks import DbForeignKey, load_foreign_keys, reach
from dbtest.errors import ConfigError, DbAssertionError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["Blocked", "CascadeReport", "CascadeResult", "assert_cascade"]

_VIAS = ("orm", "database", "both")


@dataclass
class CascadeReport:
    """The results of :func:`assert_cascade`: ``orm`` and/or ``database``."""

    target: str
    orm: CascadeResult | None = None
    database: CascadeResult | None = None

    @property
    def results(self) -> list[CascadeResult]:
        """The results that were measured, ORM first."""
        return [r for r in (self.orm, self.database) if r is not None]


@overload
def assert_cascade(db: Session | Connection, target: Any,
                   expect: Mapping[Any, int] | None = None,
                   set_null: Mapping[Any, int] | None = None, *,
                   blocked: bool | str | None = None, via: str | None = None) -> CascadeReport: ...
@overload
def assert_cascade(db: AsyncSession | AsyncConnection, target: Any,
                   expect: Mapping[Any, int] | None = None,
                   set_null: Mapping[Any, int] | None = None, *,
                   blocked: bool | str | None = None, via: str | None = None
                   ) -> Awaitable[CascadeReport]: ...
def assert_cascade(db: Any, target: Any, expect: Mapping[Any, int] | None = None,
                   set_null: Mapping[Any, int] | None = None, *,
                   blocked: bool | str | None = None, via: str | None = None) -> Any:
    """Delete ``target`` in a savepoint, compare what happened with ``expect``, undo it.

    ``target`` is a persistent ORM object, or ``(table, pk)`` where ``table`` is a name,
    ``Table`` or mapped class and ``pk`` a value, a tuple (composite key) or a mapping
    ``{column: value}`` naming exactly one row. ``expect`` maps table -> rows deleted,
    ``set_null`` table -> rows updated; other tables must be untouched. ``blocked=True`` (or
    a constraint name) asserts that the delete is refused instead. ``via`` is ``"orm"``,
    ``"database"`` or ``"both"`` (default: both for ORM objects, database otherwise).
    Returns a :class:`CascadeReport` (an awaitable of it for an ``AsyncSession``).
    """
    __tracebackhide__ = True
    if via is not None and via not in _VIAS:
        raise ConfigError(f"assert_cascade(): via must be one of {', '.join(_VIAS)}, "
                          f"got {via!r}.")
    for name, mapping in (("expect", expect), ("set_null", set_null)):
        if mapping is not None and not isinstance(mapping, Mapping):
            raise ConfigError(f"assert_cascade(): {name} maps table -> row count, got "
                              f"{type(mapping).__name__}.")
    if blocked is not None and (expect or set_null):
        raise ConfigError("assert_cascade(): blocked= asserts that nothing is deleted; do not "
                          "combine it with expect= or set_null=.")
    return run(db, partial(_cascade, target=target, expect=dict(expect or {}),
                           set_null=dict(set_null or {}), blocked=blocked, via=via),
               helper="assert_cascade", engine_ok=False)


# -- the work ------------------------------------------------------------------------------
def _cascade(db: Any, target: Any, expect: dict[Any, int], set_null: dict[Any, int],
             blocked: bool | str | None, via: str | None) -> CascadeReport:
    __tracebackhide__ = True
    from sqlalchemy.orm import Session

    session = db if isinstance(db, Session) else None
    conn = connection_of(db)
    tgt = _target(session, conn, target)
    if session is not None:
        session.flush()  # the test's pending objects are data, not part of the delete
    mode = via or ("both" if tgt.obj is not None else "database")
    if mode != "database" and tgt.obj is None:
        raise ConfigError("assert_cascade(): via='orm' needs an ORM object (or a mapped class "
                          "and primary key) and a Session; a table name can only be deleted "
                          "from in the database (via='database').")
    fks = load_foreign_keys(conn, details=False)
    readable = _check_readable(tgt, fks)
    report = CascadeReport(tgt.label)
    start = stats_snapshot(conn)
    counters: StatsSnapshot | None = start
    if mode in ("orm", "both"):
        assert session is not None
        report.orm, counters = measure(conn, tgt, "orm", fks,
                                       lambda: orm_delete(session, tgt.obj), readable, counters)
    if mode in ("database", "both"):
        report.database, _ = measure(conn, tgt, "database", fks, lambda: db_delete(conn, tgt),
                                     readable, counters)
    _compare(report, tgt, expect, set_null, blocked, conn, start)
    return report


def _target(session: Session | None, conn: Connection, target: Any) -> Target:
    from sqlalchemy import inspect as sa_inspect

    state = sa_inspect(target, raiseerr=False) if not isinstance(target, tuple) else None
    if state is not None and hasattr(state, "mapper") and hasattr(state, "persistent"):
        return _orm_target(session, conn, target, state)
    if not (isinstance(target, tuple) and len(target) == 2):
        raise ConfigError(f"assert_cascade(): the target is an ORM object or a (table, "
                          f"primary key) pair, got {target!r}.")
    table, pk = target
    if session is not None and hasattr(table, "__mapper__"):
        obj = session.get(table, pk)
        if obj is None:
            raise ConfigError(f"assert_cascade(): no {table.__name__} with primary key {pk!r}.")
        return _orm_target(session, conn, obj, sa_inspect(obj))
    info = resolve_table(conn, table, helper="assert_cascade")
    _require_table(info)
    if isinstance(pk, Mapping):
        info.check_columns(list(pk), helper="assert_cascade")
        return Target(info, dict(pk))
    values = pk if isinstance(pk, tuple) else (pk,)
    if len(values) != len(info.primary_key):
        raise ConfigError(f"assert_cascade(): {info.display} has primary key "
                          f"({', '.join(info.primary_key) or 'none'}); got {pk!r}. Pass one "
                          f"value per key column, or a mapping {{column: value}}.")
    return Target(info, dict(zip(info.primary_key, values, strict=True)))


def _orm_target(session: Session | None, conn: Connection, obj: Any, state: Any) -> Target:
    what = f"{type(obj).__name__} {obj!r}"
    if not state.persistent:
        kind = next((k for k in ("transient", "pending", "detached", "deleted") if
                     getattr(state, k, False)), "not persistent")
        fix = {"transient": "add it to the session and flush",
               "pending": "flush the session first (db.flush())",
               "detached": "load it in this session (db.get / db.merge)",
               "deleted": "it was already deleted in this session"}.get(kind, "flush it")
        raise ConfigError(f"assert_cascade(): {what} is {kind}, not persistent: {fix}.")
    if session is None:
        raise ConfigError(f"assert_cascade(): {what} is an ORM object; pass the Session it "
                          f"belongs to, or (table, primary key) with a Connection.")
    if state.session is not session:
        raise ConfigError(f"assert_cascade(): {what} belongs to another session; pass the "
                          f"session it was loaded in.")
    mapper = state.mapper
    table = mapper.base_mapper.local_table
    info = resolve_table(conn, table, helper="assert_cascade")
    _require_table(info)
    key = {col.name: value for col, value in zip(mapper.primary_key, state.identity,
                                                 strict=True)}
    return Target(info, key, obj)


def _require_table(info: TableInfo) -> None:
    if info.kind not in ("r", "p"):
        raise ConfigError(f"assert_cascade(): {info.display} is not a table (a view?); "
                          f"deletes cascade from tables only.")


def _check_readable(tgt: Target, fks: list[DbForeignKey]) -> set[tuple[str, str]]:
    """The tables a delete of ``tgt`` reaches; ConfigError if the role cannot read one."""
    reached = {(tgt.info.schema, tgt.info.name)}
    for fk, path in reach(fks, tgt.info.oid):
        if not fk.readable:
            raise ConfigError(f"assert_cascade(): deleting from {tgt.info.display} reaches "
                              f"{fk.display} (through {' -> '.join(path)}), which the current "
                              f"role cannot read. GRANT SELECT ON {fk.display} to it, or run "
                              f"the assertion as the tables' owner.")
        reached.add((fk.schema, fk.table))
    return reached


def _compare(report: CascadeReport, tgt: Target, expect: dict[Any, int],
             set_null: dict[Any, int], blocked: bool | str | None, conn: Connection,
             tables: StatsSnapshot) -> None:
    __tracebackhide__ = True
    want_del = _names(conn, expect, "expect", tables)
    want_null = _names(conn, set_null, "set_null", tables)
    problems: list[str] = []
    for res in report.results:
        if blocked is not None:
            if res.blocked is None:
                problems.append(f"{res.via} delete of {tgt.label} was not refused "
                                f"(blocked={blocked!r} expected)")
            elif isinstance(blocked, str) and res.blocked.constraint != blocked:
                problems.append(f"{res.via} delete of {tgt.label} was refused by "
                                f"{res.blocked.constraint}, not by {blocked}")
        elif res.blocked is not None:
            problems.append(f"{res.via} delete of {tgt.label} was refused by "
                            f"{res.blocked}")
        elif res.deleted != want_del or res.set_null != want_null:
            problems.append(f"{res.via} delete of {tgt.label} differs from what was expected")
    if not problems:
        return
    hints = []
    if report.orm and report.database and not (report.orm.blocked or report.database.blocked) \
            and (report.orm.deleted, report.orm.set_null) != (report.database.deleted,
                                                              report.database.set_null):
        hints.append("  the ORM and the database disagree: dbtest.audit_foreign_keys() names "
                     "the relationship whose cascade / passive_deletes does not match the "
                     "ON DELETE rule.")
    if blocked is None and any(r.blocked for r in report.results):
        hints.append("  if the refusal is intended, assert it with blocked=True (or the "
                     "constraint name).")
    raise DbAssertionError("\n".join(["assert_cascade: " + "; ".join(problems) + ".",
                                      _table(report, want_del, want_null), *hints]))


def _names(conn: Connection, mapping: dict[Any, int], what: str, tables: StatsSnapshot
           ) -> dict[str, int]:
    """``mapping`` keyed by display names, from the counters' table list (no query)."""
    out: dict[str, int] = {}
    for table, n in mapping.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"assert_cascade(): {what}[{table!r}] must be a row count "
                              f"(int >= 0), got {n!r}.")
        schema, name = split_name(table, helper="assert_cascade")
        found = [(s, v) for (s, t), (v, *_) in tables.tables.items() if t == name
                 and (s == schema or (schema is None and v))]
        if not found:  # not a table with counters: let the catalog explain
            info = resolve_table(conn, table, helper="assert_cascade")
            found = [(info.schema, info.visible)]
        shown = name if found[0][1] else f"{found[0][0]}.{name}"
        if n:
            out[shown] = out.get(shown, 0) + n
    return out


def _table(report: CascadeReport, want_del: dict[str, int], want_null: dict[str, int]) -> str:
    results = report.results
    names = list(dict.fromkeys([*want_del, *want_null, *(t for r in results for t in
                                                         [*r.deleted, *r.set_null])]))
    headers = ["table", "deleted: expected", *(f"{r.via}" for r in results),
               "set null: expected", *(f"{r.via}" for r in results)]
    rows: list[list[Any]] = []
    marks: list[tuple[int, int]] = []
    for name in names:
        row: list[Any] = [name, want_del.get(name, 0)]
        row += [_render.MISSING if r.blocked else r.deleted.get(name, 0) for r in results]
        row.append(want_null.get(name, 0))
        row += [_render.MISSING if r.blocked else r.set_null.get(name, 0) for r in results]
        for j, r in enumerate(results):
            if not r.blocked and r.deleted.get(name, 0) != want_del.get(name, 0):
                marks.append((len(rows), 2 + j))
            if not r.blocked and r.set_null.get(name, 0) != want_null.get(name, 0):
                marks.append((len(rows), 3 + len(results) + j))
        rows.append(row)
    lines = [f"  deleting {report.target}:"]
    lines.append(_render.table(headers, rows, marked=marks, limit=None) if rows
                 else "  (no other table touched)")
    for r in results:
        if r.blocked:
            lines.append(f"  {r.via}: refused by {r.blocked}: {r.blocked.message}")
    return "\n".join(lines)
