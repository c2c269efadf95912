"""``table_state`` and ``query_state``, plus the sync/async dispatch every state function uses."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dbtest.errors import SnapshotError
from dbtest.state._render import (
    SEP,
    column_expr,
    column_sql,
    formatter,
    quote_ident,
)
from dbtest.state._tables import (
    Labeler,
    MaskSpec,
    Options,
    OrderSpec,
    TableData,
    header,
    plan_function,
    read_tables,
    render_rows,
    resolve_options,
    title_name,
)
from dbtest.state._values import INDENT, QueryState, TableState

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["dispatch", "query_state_sync", "render_tables", "table_state_sync"]

T = TypeVar("T")


def sync_connection(target: Any) -> Connection:
    """The ``Connection`` of a Session (flushed first) or a Connection."""
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    if isinstance(target, Session):
        target.flush()  # pending ORM changes belong in the state, as a query would see them
        return target.connection()
    if isinstance(target, Connection):
        return target
    raise SnapshotError(f"expected a SQLAlchemy Session, AsyncSession, Connection, "
                        f"AsyncConnection or Engine, got {type(target).__name__}. Pass the db "
                        f"or db_connection fixture (or an Engine).")


def dispatch(target: Any, fn: Callable[[Connection], T]) -> T | Awaitable[T]:
    """Run ``fn`` on the sync connection behind ``target``.

    Async targets (``AsyncSession``, ``AsyncConnection``, ``AsyncEngine``) return an
    awaitable: ``await table_state(async_db, "users")``.
    """
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    if isinstance(target, (AsyncSession, AsyncConnection)):
        return target.run_sync(lambda sync: fn(sync_connection(sync)))
    if isinstance(target, AsyncEngine):
        return _on_async_engine(target, fn)
    if isinstance(target, Engine):
        with target.connect() as conn:
            return fn(conn)
    return fn(sync_connection(target))


async def _on_async_engine(engine: Any, fn: Callable[[Connection], T]) -> T:
    async with engine.connect() as conn:
        return await conn.run_sync(fn)  # type: ignore[no-any-return]


def render_tables(datas: list[TableData], opts: Options, labeler: Labeler) -> str:
    """The text of a :class:`TableState`: a block per table, a row per line."""
    for data in datas:
        table = data.table
        if table.surrogate and opts.labels:
            idx = [c.name for c in table.columns].index(table.pk[0])
            labeler.provide(table.oid, (row[idx] for row in data.rows))
    out: list[str] = []
    for data in datas:
        n = len(data.rows)
        by = f", {'key' if data.by_key else 'order'}: {', '.join(data.order)}"
        out.append(f"{title_name(data.table.display)}: {n} row{'' if n == 1 else 's'}{by}")
        out.append(INDENT + header(data.table))
        out.extend(INDENT + line for line in render_rows(data, opts, labeler))
    return "\n".join(out) if out else "no tables"


def table_state_sync(conn: Connection, tables: tuple[Any, ...], order_by: OrderSpec,
                     mask: MaskSpec, labels: bool) -> TableState:
    """:func:`dbtest.table_state` on a sync connection."""
    selected, opts = resolve_options(conn, tables, order_by, mask, labels)
    datas = read_tables(conn, selected, opts)
    text = render_tables(datas, opts, Labeler(conn, opts))
    return TableState(text, data=(opts, datas))


_ORDERED = re.compile(r"\border\s+by\b", re.IGNORECASE)


def _kinds(conn: Connection, oids: list[int]) -> dict[int, str]:
    from sqlalchemy import text

    from dbtest.state._catalog import value_kind

    rows = conn.execute(text(
        "SELECT t.oid, bt.typname, bt.typcategory::text FROM pg_type t JOIN pg_type bt ON bt.oid = "
        "CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
        "WHERE t.oid = ANY(:oids)"), {"oids": oids}).all()
    return {int(o): value_kind(str(n), str(c)) for o, n, c in rows}


def _label_maps(conn: Connection, labels: Mapping[str, Any] | None, names: list[str]
                ) -> dict[str, dict[str, str]]:
    if not labels:
        return {}
    out: dict[str, dict[str, str]] = {}
    for column, table_name in labels.items():
        if column not in names:
            raise SnapshotError(f"labels names column {column!r}, which the query does not "
                                f"return (columns: {', '.join(names)})")
        selected, opts = resolve_options(conn, (table_name,), None, None, True)
        table = opts.tables[selected[0]]
        if not table.surrogate:
            raise SnapshotError(f"labels={{{column!r}: {table.display!r}}}: {table.display} "
                                f"has no generated single-column primary key to label")
        maps = Labeler(conn, opts).labels(table.oid)
        out[column] = maps or {}
    return out


def query_state_sync(conn: Connection, query: Any, params: Mapping[str, Any] | None,
                     name: str, order: str, mask: Sequence[str] | None,
                     labels: Mapping[str, Any] | None) -> QueryState:
    """:func:`dbtest.query_state` on a sync connection."""
    # Select and TextClause from sqlalchemy itself: SQLAlchemy 2.0.0's sqlalchemy.sql lacks them
    from sqlalchemy import Select, TextClause, select, text

    if order not in ("auto", "query", "sorted"):
        raise SnapshotError(f"order={order!r} must be 'auto', 'query' or 'sorted'")
    bind = dict(params or {})
    if isinstance(query, (str, TextClause)):
        sql = (query if isinstance(query, str) else query.text).strip().rstrip(";")
        described = conn.execute(text(f"SELECT * FROM ({sql}) AS dbtest_q LIMIT 0"), bind)
        ordered = bool(_ORDERED.search(sql))
    elif isinstance(query, Select):
        sub = query.subquery("dbtest_q")
        described = conn.execute(query.limit(0), bind)
        ordered = bool(query._order_by_clauses)
        if described.cursor is not None and len(described.cursor.description or ()) != len(
                sub.c):
            described.close()
            raise SnapshotError("a column of the select() has no name (a bare text(...)); "
                                "name it: literal_column('1.50::numeric').label('price')")
    else:
        raise SnapshotError(f"query_state takes SQL text or a select(), got "
                            f"{type(query).__name__}; pass SQL text or a select()")
    desc = described.cursor.description if described.cursor else None
    described.close()
    names = [str(d[0]) for d in desc or ()]
    oids: list[int] = [int(cast(Any, d[1])) for d in desc or ()]  # type_code is the oid
    kinds = _kinds(conn, sorted(set(oids)))
    col_kinds = [kinds.get(oid, "other") for oid in oids]
    if isinstance(query, Select):
        stmt: Any = select(*[column_expr(c, k) for c, k in
                             zip(sub.c, col_kinds, strict=True)]).select_from(sub)
    else:
        aliases = [quote_ident(conn, f"c{i}") for i in range(len(names))]
        exprs = ", ".join(column_sql(f"dbtest_q.{a}", k) for a, k in
                          zip(aliases, col_kinds, strict=True))
        stmt = text(f"SELECT {exprs} FROM ({sql}) AS dbtest_q({', '.join(aliases)})")
    rows = conn.execute(stmt, bind).all() if names else []
    unknown = sorted(set(mask or ()) - set(names))
    if unknown:
        raise SnapshotError(f"mask names column(s) {', '.join(unknown)} that the query does "
                            f"not return (columns: {', '.join(names)})")
    maps = _label_maps(conn, labels, names)
    funcs: list[Callable[[str | None], str]] = [
        plan_function("mask", None) if col in (mask or ()) else
        plan_function("labels", maps[col]) if col in maps else
        plan_function("format", formatter(kind))
        for col, kind in zip(names, col_kinds, strict=True)]
    lines = [SEP.join([f(v) for f, v in zip(funcs, row, strict=True)]) for row in rows]
    keep = order == "query" or (order == "auto" and ordered)
    if not keep:
        lines.sort()
    n = len(lines)
    head = f"{title_name(name)}: {n} row{'' if n == 1 else 's'}, " + (
        "in query order" if keep else "sorted")
    body = [INDENT + SEP.join(title_name(c) for c in names)] + [INDENT + ln for ln in lines]
    return QueryState("\n".join([head, *body]))
