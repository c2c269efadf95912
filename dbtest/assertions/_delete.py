"""The measured delete behind :func:`dbtest.assert_cascade`: one delete in a savepoint, the
rows it deleted and updated per table, then the rollback."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtest.assertions import _render
from dbtest.assertions._changes import StatsSnapshot, stats_snapshot
from dbtest.assertions._db import INTERNAL_OPTION, TableInfo
from dbtest.assertions._fks import DbForeignKey
from dbtest.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

__all__ = ["Blocked", "CascadeResult", "Target", "db_delete", "measure", "orm_delete"]


@dataclass(frozen=True)
class Blocked:
    """A delete the database refused (or that failed on another constraint)."""

    constraint: str | None
    table: str | None
    rule: str | None
    message: str

    def __str__(self) -> str:
        rule = f" ({self.rule})" if self.rule else ""
        where = f" on {self.table}" if self.table else ""
        return f"constraint {self.constraint or '?'}{rule}{where}"


@dataclass
class CascadeResult:
    """What one delete did: rows deleted and updated per table (the target row excluded)."""

    via: str
    deleted: dict[str, int] = field(default_factory=dict)
    set_null: dict[str, int] = field(default_factory=dict)
    blocked: Blocked | None = None
    keys: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    """display name -> (schema, table) of every table in ``deleted`` / ``set_null``"""


@dataclass
class Target:
    """The row to delete: its table, key and (for the ORM way) object."""

    info: TableInfo
    key: dict[str, Any]
    obj: Any = None

    @property
    def label(self) -> str:
        pk = ", ".join(f"{k}={_render.fmt(v)}" for k, v in self.key.items())
        return f"{self.info.display} ({pk})"


def orm_delete(session: Session, obj: Any) -> None:
    session.delete(obj)
    session.flush()


def db_delete(conn: Connection, tgt: Target) -> None:
    from sqlalchemy import and_, delete

    tc = tgt.info.clause()
    stmt = delete(tc).where(and_(*(tc.c[k].is_(None) if v is None else tc.c[k] == v
                                   for k, v in tgt.key.items())))
    count = conn.execute(stmt).rowcount
    if count != 1:
        raise ConfigError(f"assert_cascade(): {tgt.label} matches {count} rows; the target "
                          f"must name exactly one row. Check the primary key value.")


def measure(conn: Connection, tgt: Target, via: str, fks: list[DbForeignKey], delete: Any,
            readable: set[tuple[str, str]], before: StatsSnapshot | None = None
            ) -> tuple[CascadeResult, StatsSnapshot | None]:
    """Run ``delete`` in a savepoint, record what it did, roll back.

    Returns the result and the counters after the delete: the rollback leaves PostgreSQL's
    counters where they are, so they are the next measurement's starting point.
    """
    from sqlalchemy.exc import IntegrityError

    result = CascadeResult(via)
    # the ORM delete runs in a Session savepoint, so rolling it back also restores the
    # session's view of the deleted objects
    savepoint: Any = (_session_of(tgt.obj) if via == "orm" else conn).begin_nested()
    try:
        start = before or stats_snapshot(conn)
        try:
            delete()
        except IntegrityError as exc:
            result.blocked = _blocked(exc, fks)
            return result, None
        after = stats_snapshot(conn)
        _fill(result, start, after, tgt)
        _count_survivors(conn, result, readable)
    finally:
        savepoint.rollback()
    return result, after


def _session_of(obj: Any) -> Any:
    from sqlalchemy.orm import object_session

    return object_session(obj)


def _fill(result: CascadeResult, before: StatsSnapshot, after: StatsSnapshot, tgt: Target) -> None:
    for (schema, name), (visible, _ins, upd, dele) in after.tables.items():
        _, _, upd0, del0 = before.tables.get((schema, name), (visible, 0, 0, 0))
        shown = name if visible else f"{schema}.{name}"
        result.keys[shown] = (schema, name)
        deleted = dele - del0
        if (schema, name) == (tgt.info.schema, tgt.info.name):
            deleted -= 1  # the target row itself
        if deleted:
            result.deleted[shown] = deleted
        if upd - upd0:
            result.set_null[shown] = upd - upd0


# the newest transaction id this backend holds a lock on: the savepoint's own
_XID = ("(SELECT max(transactionid::text::bigint)::text::xid FROM pg_locks "
        "WHERE pid = pg_backend_pid() AND locktype = 'transactionid' "
        "AND mode = 'ExclusiveLock' AND granted)")


def _count_survivors(conn: Connection, result: CascadeResult,
                     readable: set[tuple[str, str]]) -> None:
    """Replace the update counts by the updated rows that still exist.

    PostgreSQL counts a row that one rule sets null and another then deletes as both
    updated and deleted (which of the two comes first depends on trigger order). The rows
    the delete updated and left alive carry the savepoint's transaction id in ``xmin``;
    every transaction and subtransaction holds a lock on its own id, and the newest one of
    this backend is the savepoint's. Tables outside the foreign-key graph (touched by the
    ORM or a trigger, maybe unreadable) keep PostgreSQL's count.
    """
    from sqlalchemy import column, func, literal_column, select, table, union_all

    names = [shown for shown in result.set_null if result.keys[shown] in readable]
    if not names:
        return
    parts: list[Any] = []
    for index, shown in enumerate(names):
        schema, name = result.keys[shown]
        tc = table(name, column("xmin"), schema=schema)
        parts.append(select(literal_column(str(index)), func.count()).select_from(tc)
                     .where(tc.c.xmin == literal_column(_XID)))
    stmt = union_all(*parts).execution_options(**{INTERNAL_OPTION: True})
    for index, count in conn.execute(stmt):
        shown = names[int(index)]
        if count:
            result.set_null[shown] = int(count)
        else:
            del result.set_null[shown]


def _blocked(exc: Any, fks: list[DbForeignKey]) -> Blocked:
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)  # psycopg
    cause = getattr(orig, "__cause__", None)  # asyncpg, under SQLAlchemy's adapter
    constraint = getattr(diag, "constraint_name", None) or getattr(cause, "constraint_name",
                                                                   None)
    table = getattr(diag, "table_name", None) or getattr(cause, "table_name", None)
    rule = next((fk.on_delete for fk in fks if fk.name == constraint
                 and table in (None, fk.table)), None)
    message = str(orig if orig is not None else exc).strip().splitlines()[0]
    detail = getattr(diag, "message_detail", None) or getattr(cause, "detail", None)
    if detail:
        message = f"{message} ({detail})"
    return Blocked(constraint, table, rule, message)
