"""``bulk_insert``: rows into a table at COPY speed, on psycopg 3 and asyncpg.

One function for every connection kind; the async kinds return an awaitable::

    n = dbtest.bulk_insert(db.connection(), User, rows)               # sync: an int
    n = await dbtest.bulk_insert(async_db_connection, User, rows)      # async: awaitable int
    n = await dbtest.bulk_insert(raw_asyncpg_connection, "users", rows)

This is dbtest's async convention for functions that take a database object: one name,
dispatching on the object's type (``abulk_insert`` remains as a deprecated alias).

Accepted connections: a SQLAlchemy ``Connection`` or ``Session`` (psycopg 3 → COPY; any
other driver → one executemany INSERT), a raw ``psycopg.Connection``; async: a SQLAlchemy
``AsyncConnection`` / ``AsyncSession`` over asyncpg (``copy_records_to_table``) or psycopg
async (COPY), a raw ``asyncpg.Connection`` or ``psycopg.AsyncConnection``.

``table_or_model``: a mapped class (attribute keys or column names in the rows), a
``Table``, or a table name (``"users"``, ``"app.users"``). ``rows``: mappings (or
sequences with ``columns=``). Columns missing from every row are left out of the COPY
(server defaults apply); SQLAlchemy Python-side defaults of a model or Table are filled in;
rows that lack a column other rows have are copied in a separate COPY so the server
default still applies to them. Values are converted by the column's database type: any
Python object for json/jsonb (``json.dumps``, as SQLAlchemy's JSON type does), lists for
arrays, ``Decimal``/``int``/``float``/``str`` for numeric, ``datetime`` or ISO strings for
timestamps, ``Enum`` members (by name, as SQLAlchemy stores them) or strings for enums,
``UUID`` or strings for uuid. ``TypeDecorator`` columns go through their
``process_bind_param``.

The load runs in a savepoint inside the caller's transaction (nothing is committed); a
failing row raises :class:`~dbtest.errors.SeedError` naming the table, the row number
(1-based, in ``rows``) and the constraint, and leaves nothing behind.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, overload

from dbtest.bulk._convert import asyncpg_converter, convert_columns, enum_name
from dbtest.bulk._plan import (
    CATALOG_SQL,
    BulkPlan,
    Target,
    describe_error,
    plan_rows,
    resolve_target,
)
from dbtest.errors import SeedError

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["Target", "abulk_insert", "bulk_insert", "is_async_connection", "resolve_target"]

_ASYNC_MODULES = ("asyncpg", "sqlalchemy.ext.asyncio")


def is_async_connection(connection: Any) -> bool:
    """Whether ``connection`` needs awaiting (asyncpg, psycopg async, SQLAlchemy async)."""
    cls = type(connection)
    if cls.__module__.startswith(_ASYNC_MODULES):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(connection, psycopg.AsyncConnection)


@overload
def bulk_insert(connection: Connection | Session | psycopg.Connection[Any], table_or_model: Any,
                rows: Iterable[Any], *, columns: Sequence[str] | None = None) -> int: ...
@overload
def bulk_insert(connection: AsyncConnection | AsyncSession | psycopg.AsyncConnection[Any],
                table_or_model: Any,
                rows: Iterable[Any], *, columns: Sequence[str] | None = None
                ) -> Awaitable[int]: ...
@overload
def bulk_insert(connection: Any, table_or_model: Any, rows: Iterable[Any], *,
                columns: Sequence[str] | None = None) -> int | Awaitable[int]: ...


def bulk_insert(connection: Any, table_or_model: Any, rows: Iterable[Any], *,
                columns: Sequence[str] | None = None) -> int | Awaitable[int]:
    """Insert ``rows`` into ``table_or_model`` with COPY; return the number of rows.

    For async connections the result is an awaitable (``await bulk_insert(...)``).
    See the module documentation for connections, values and errors.
    """
    if is_async_connection(connection):
        return _async_insert(connection, table_or_model, rows, columns)
    return _sync_insert(connection, table_or_model, rows, columns)


def abulk_insert(connection: Any, table_or_model: Any, rows: Iterable[Any], *,
                 columns: Sequence[str] | None = None) -> Awaitable[int]:
    """Deprecated alias: ``await bulk_insert(async_connection, ...)`` does the same.

    Functions that take a database object dispatch on its type (dbtest's one async
    convention); only factory class methods, which take none, have ``a`` names.
    """
    warnings.warn("dbtest.abulk_insert is deprecated: `await dbtest.bulk_insert(connection, "
                  "...)` returns an awaitable for async connections", DeprecationWarning,
                  stacklevel=2)
    return _async_insert(connection, table_or_model, rows, columns)


async def _async_insert(connection: Any, table_or_model: Any, rows: Iterable[Any],
                        columns: Sequence[str] | None) -> int:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(connection, AsyncSession):
        await connection.flush()  # pending parents must exist before their children
        connection = await connection.connection()
    if isinstance(connection, AsyncConnection):
        async with connection.begin_nested():
            raw = (await connection.get_raw_connection()).driver_connection
            return await _raw_async_insert(raw, table_or_model, rows, columns,
                                           connection.dialect, savepoint=False)
    return await _raw_async_insert(connection, table_or_model, rows, columns, None,
                                   savepoint=True)


# -- sync -------------------------------------------------------------------------------------
def _sync_insert(connection: Any, table_or_model: Any, rows: Iterable[Any],
                 columns: Sequence[str] | None) -> int:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    if isinstance(connection, Session):
        connection.flush()  # pending parents must exist before their children
        connection = connection.connection()
    if isinstance(connection, Connection):
        raw = connection.connection.dbapi_connection
        driver = getattr(raw, "driver_connection", raw)
        import psycopg

        with connection.begin_nested():
            if isinstance(driver, psycopg.Connection):
                return _psycopg_insert(driver, table_or_model, rows, columns,
                                       connection.dialect)
            if is_async_connection(driver):
                # the sync facade of an AsyncConnection (run_sync, acreate_batch): we are
                # in SQLAlchemy's greenlet and may await the driver from here
                from sqlalchemy.util import await_only

                return await_only(_raw_async_insert(driver, table_or_model, rows, columns,
                                                    connection.dialect, savepoint=False))
            return _executemany_insert(connection, table_or_model, rows, columns)
    import psycopg

    if isinstance(connection, psycopg.Connection):
        from psycopg.pq import TransactionStatus

        if connection.info.transaction_status == TransactionStatus.INTRANS:
            with connection.transaction():  # a savepoint: a failure leaves the caller's
                return _psycopg_insert(connection, table_or_model, rows, columns, None)
        return _psycopg_insert(connection, table_or_model, rows, columns, None)
    raise SeedError(f"bulk_insert: unsupported connection {type(connection).__name__}; pass a "
                    f"SQLAlchemy Connection/Session or a psycopg 3 / asyncpg connection")


def _catalog_sync(cursor_conn: Any, target: Target) -> list[tuple[Any, ...]]:
    return list(cursor_conn.execute(CATALOG_SQL, (target.regclass,)).fetchall())


def _psycopg_insert(conn: Any, table_or_model: Any, rows: Iterable[Any],
                    columns: Sequence[str] | None, dialect: Any) -> int:
    import psycopg
    from psycopg.types.json import Json, Jsonb

    target = resolve_target(table_or_model)
    plan = plan_rows(target, _catalog_sync(conn, target), rows, columns, dialect)
    wrappers = {"json": Json, "jsonb": Jsonb}
    total = 0
    for group in plan.groups:
        converters = [_psycopg_converter(col, wrappers) for col in group.db_columns]
        stmt = _copy_statement(target, group.db_columns)
        group.values = convert_columns(group.values, converters)
        index = 0
        try:
            with conn.cursor() as cur, cur.copy(stmt) as copy:
                write = copy.write_row
                for index, values in enumerate(group.values):  # noqa: B007 - see except
                    write(values)
        except psycopg.Error as exc:
            raise describe_error(exc, target, plan, group, index) from None
        total += len(group.values)
    return total


def _copy_statement(target: Any, columns: Sequence[Any]) -> Any:
    """``COPY <table> (<columns>) FROM STDIN`` for psycopg, sync or async."""
    from psycopg import sql

    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(target.schema, target.name) if target.schema
        else sql.Identifier(target.name),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns))


def _psycopg_converter(col: Any, wrappers: dict[str, Any]) -> Any:
    if col.typname in wrappers:
        return wrappers[col.typname]
    if col.category == "E":
        return enum_name
    return None


def _executemany_insert(connection: Any, table_or_model: Any, rows: Iterable[Any],
                        columns: Sequence[str] | None) -> int:
    # other drivers (psycopg2, pg8000...): one executemany INSERT, still one round trip
    from sqlalchemy import column, insert, table, text
    from sqlalchemy.exc import DBAPIError

    target = resolve_target(table_or_model)
    catalog = list(connection.execute(text(CATALOG_SQL.replace("%s", ":t")),
                                      {"t": target.regclass}).fetchall())
    plan = plan_rows(target, catalog, rows, columns, connection.dialect)
    total = 0
    for group in plan.groups:
        names = [c.name for c in group.db_columns]
        tbl = table(target.name, *[column(n) for n in names], schema=target.schema)
        conv = [json.dumps if c.typname in ("json", "jsonb") else
                (enum_name if c.category == "E" else None) for c in group.db_columns]
        params = [{n: (v if f is None or v is None else f(v))
                   for n, f, v in zip(names, conv, values, strict=True)}
                  for values in group.values]
        try:
            connection.execute(insert(tbl), params)
        except DBAPIError as exc:
            raise describe_error(exc.orig or exc, target, plan, group, None) from None
        total += len(params)
    return total


# -- async ------------------------------------------------------------------------------------
async def _raw_async_insert(raw: Any, table_or_model: Any, rows: Iterable[Any],
                            columns: Sequence[str] | None, dialect: Any, *,
                            savepoint: bool) -> int:
    import psycopg

    if isinstance(raw, psycopg.AsyncConnection):
        return await _psycopg_async_insert(raw, table_or_model, rows, columns, dialect,
                                           savepoint)
    if type(raw).__module__.startswith("asyncpg"):
        return await _asyncpg_insert(raw, table_or_model, rows, columns, dialect, savepoint)
    raise SeedError(f"bulk_insert: unsupported async connection {type(raw).__name__}; pass an "
                    f"asyncpg or psycopg AsyncConnection, or a SQLAlchemy AsyncConnection")


async def _psycopg_async_insert(conn: Any, table_or_model: Any, rows: Iterable[Any],
                                columns: Sequence[str] | None, dialect: Any,
                                savepoint: bool) -> int:
    import psycopg
    from psycopg.pq import TransactionStatus
    from psycopg.types.json import Json, Jsonb

    target = resolve_target(table_or_model)
    cur = await conn.execute(CATALOG_SQL, (target.regclass,))
    plan = plan_rows(target, list(await cur.fetchall()), rows, columns, dialect)
    wrappers = {"json": Json, "jsonb": Jsonb}
    in_tx = savepoint and conn.info.transaction_status == TransactionStatus.INTRANS
    total = 0
    for group in plan.groups:
        converters = [_psycopg_converter(col, wrappers) for col in group.db_columns]
        stmt = _copy_statement(target, group.db_columns)
        position = [0]  # the row being written, for errors raised while adapting it
        try:
            if in_tx:
                async with conn.transaction():
                    await _psycopg_async_copy(conn, stmt, group.values, converters, position)
            else:
                await _psycopg_async_copy(conn, stmt, group.values, converters, position)
        except psycopg.Error as exc:
            raise describe_error(exc, target, plan, group, position[0]) from None
        total += len(group.values)
    return total


async def _psycopg_async_copy(conn: Any, stmt: Any, values: list[Any],
                              converters: list[Any], position: list[int]) -> None:
    values = convert_columns(values, converters)
    async with conn.cursor() as cur, cur.copy(stmt) as copy:
        for index, row in enumerate(values):
            position[0] = index
            await copy.write_row(row)


async def _asyncpg_insert(conn: Any, table_or_model: Any, rows: Iterable[Any],
                          columns: Sequence[str] | None, dialect: Any, savepoint: bool) -> int:
    import asyncpg

    target = resolve_target(table_or_model)
    catalog = [tuple(r) for r in await conn.fetch(CATALOG_SQL.replace("%s", "$1"),
                                                  target.regclass)]
    plan: BulkPlan = plan_rows(target, catalog, rows, columns, dialect)
    total = 0
    for group in plan.groups:
        values = convert_columns(group.values,
                                 [asyncpg_converter(col) for col in group.db_columns])
        records = values if values and isinstance(values[0], tuple) else \
            list(map(tuple, values))
        names = [c.name for c in group.db_columns]
        try:
            if savepoint:
                async with conn.transaction():
                    await conn.copy_records_to_table(target.name, records=records,
                                                     columns=names, schema_name=target.schema)
            else:
                await conn.copy_records_to_table(target.name, records=records, columns=names,
                                                 schema_name=target.schema)
        except (asyncpg.PostgresError, asyncpg.exceptions.DataError) as exc:
            raise describe_error(exc, target, plan, group, None) from None
        except (TypeError, ValueError) as exc:
            raise SeedError(f"bulk_insert into {target.display}: a value cannot be encoded "
                            f"for asyncpg: {exc}. Pass values of the column's type.") from None
        total += len(records)
    return total
