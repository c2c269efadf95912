"""What every assertion needs: the database handle in its sync form, and the catalog.

Each helper accepts a ``Session``, a ``Connection`` or (for read-only helpers) an ``Engine``,
and their async twins. The work is written once, synchronously; for an ``AsyncSession`` /
``AsyncConnection`` it runs through ``run_sync`` and the helper returns an awaitable.

Every catalog query here skips the schema ``dbtest_internal`` (leak detection keeps a table
there that gets a row on each DML statement inside a test) and the system schemas. Queries
issued by dbtest carry the execution option ``dbtest_internal`` so that
:func:`dbtest.count_queries` does not count them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from dbtest._leaks import INTERNAL_SCHEMA
from dbtest.errors import ConfigError

if TYPE_CHECKING:
    from typing import Any, TypeAlias

    from sqlalchemy import Connection, CursorResult, Dialect, Engine, Select, TableClause
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    SyncDb: TypeAlias = Session | Connection | Engine
    """What the sync helpers take (an Engine only where they only read)."""
    AsyncDb: TypeAlias = AsyncSession | AsyncConnection | AsyncEngine
    """What makes a helper return an awaitable."""
    AnySelect: TypeAlias = Select[*tuple[Any, ...]]
    """A select() of any number of columns (SQLAlchemy 2.1 types its columns one by one)."""

__all__ = [
    "INTERNAL_OPTION",
    "TableInfo",
    "connection_of",
    "is_async",
    "pg_dialect",
    "query",
    "resolve_table",
    "run",
    "split_name",
    "table_names",
]

T = TypeVar("T")

INTERNAL_OPTION = "dbtest_internal"
_SKIP_SCHEMAS = f"('pg_catalog', 'information_schema', '{INTERNAL_SCHEMA}', 'pg_toast')"


def is_async(db: Any) -> bool:
    """Whether ``db`` is an ``AsyncSession``, ``AsyncConnection`` or ``AsyncEngine``."""
    module = type(db).__module__
    return module.startswith("sqlalchemy.ext.asyncio")


def run(db: Any, fn: Callable[[Any], T], *, helper: str, engine_ok: bool = True) -> Any:
    """Call ``fn(sync_db)`` now, or return an awaitable doing it for async handles.

    ``sync_db`` is a ``Session`` or a ``Connection``. An ``Engine`` is accepted by read-only
    helpers (``engine_ok``) and gets a connection of its own for the call.
    """
    __tracebackhide__ = True
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

    if isinstance(db, Session | Connection):
        return fn(db)
    if isinstance(db, Engine) and engine_ok:
        with db.connect() as conn:
            return fn(conn)
    if is_async(db):
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

        if isinstance(db, AsyncSession | AsyncConnection):
            return db.run_sync(fn)
        if isinstance(db, AsyncEngine) and engine_ok:
            return _on_async_engine(db, fn)
    raise _bad_handle(db, helper, engine_ok)


async def _on_async_engine(engine: Any, fn: Callable[[Any], T]) -> T:
    __tracebackhide__ = True
    async with engine.connect() as conn:
        return await conn.run_sync(fn)  # type: ignore[no-any-return]


def _bad_handle(db: Any, helper: str, engine_ok: bool) -> ConfigError:
    kinds = "a Session, Connection" + (" or Engine" if engine_ok else "")
    return ConfigError(f"{helper}() needs {kinds} (sync or async) as its first argument, got "
                       f"{type(db).__name__}. Pass the db / async_db / db_connection fixture.")


def connection_of(db: Session | Connection) -> Connection:
    """The ``Connection`` under a sync Session (begun if need be) or the Connection itself."""
    from sqlalchemy.orm import Session

    if isinstance(db, Session):
        return db.connection()
    return db


def query(conn: Connection, sql: str, params: Mapping[str, Any] | None = None
          ) -> CursorResult[*tuple[Any, ...]]:
    """Run a dbtest-internal query (``:name`` parameters), invisible to ``count_queries``."""
    from sqlalchemy import text

    stmt = text(sql).execution_options(**{INTERNAL_OPTION: True})
    return conn.execute(stmt, dict(params or {}))


def pg_dialect() -> Dialect:
    """A PostgreSQL dialect for rendering SQL in messages and quoting names."""
    from sqlalchemy.dialects.postgresql.base import PGDialect

    return PGDialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's dialects are untyped


@dataclass(frozen=True)
class TableInfo:
    """One table (or view) as the catalog describes it."""

    oid: int
    schema: str
    name: str
    visible: bool
    kind: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]

    @property
    def display(self) -> str:
        """The name a user would write: bare when on the search path, else qualified."""
        return self.name if self.visible else f"{self.schema}.{self.name}"

    def clause(self) -> TableClause:
        """A lightweight SQLAlchemy table with every column (quoting by SQLAlchemy)."""
        from sqlalchemy import column, table

        return table(self.name, *(column(c) for c in self.columns), schema=self.schema)

    def check_columns(self, names: Sequence[str], *, helper: str) -> None:
        """Raise ConfigError naming the first column that this table does not have."""
        for name in names:
            if name not in self.columns:
                close = difflib.get_close_matches(name, self.columns, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{helper}(): table {self.display!r} has no column {name!r}."
                                  f"{hint} Its columns: {', '.join(self.columns)}.")


_TABLE_SQL = f"""
SELECT c.oid, n.nspname, c.relname, pg_table_is_visible(c.oid), c.relkind::text,
       array(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum),
       array(SELECT a.attname::text
             FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
             WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.ord)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname = :name
  AND n.nspname NOT IN {_SKIP_SCHEMAS}
  AND (n.nspname = :schema OR (CAST(:schema AS text) IS NULL AND pg_table_is_visible(c.oid)))
"""

_NAMES_SQL = f"""
SELECT n.nspname, c.relname, pg_table_is_visible(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN {_SKIP_SCHEMAS}
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""


def split_name(table: Any, *, helper: str) -> tuple[str | None, str]:
    """``(schema, name)`` of a table given as a string, a ``Table`` or a mapped class."""
    from sqlalchemy import TableClause

    found = getattr(table, "__table__", table)
    if isinstance(found, TableClause):
        return found.schema, found.name
    if isinstance(table, str) and table:
        schema, dot, name = table.rpartition(".")
        return (schema or None) if dot else None, name
    raise ConfigError(f"{helper}(): a table is given by name ('users' or 'schema.users'), as a "
                      f"Table or as a mapped class; got {table!r}.")


def resolve_table(conn: Connection, table: Any, *, helper: str) -> TableInfo:
    """The catalog entry of ``table``; ConfigError naming close matches if there is none."""
    schema, name = split_name(table, helper=helper)
    row = query(conn, _TABLE_SQL, {"name": name, "schema": schema}).first()
    if row is None:
        names = table_names(conn)
        wanted = name if schema is None else f"{schema}.{name}"
        close = difflib.get_close_matches(wanted, names, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(names) if names else "(none)"
        raise ConfigError(f"{helper}(): table {wanted!r} does not exist in this database (or is "
                          f"not on the search path).{hint} Tables: {listing}.")
    oid, nsp, rel, visible, kind, columns, pk = row
    return TableInfo(int(oid), nsp, rel, bool(visible), str(kind), tuple(columns), tuple(pk))


def table_names(conn: Connection) -> list[str]:
    """Every user table and view, bare when on the search path, else schema-qualified."""
    rows = query(conn, _NAMES_SQL).all()
    return [rel if visible else f"{nsp}.{rel}" for nsp, rel, visible in rows]
