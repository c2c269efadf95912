"""Data snapshots: table, query and schema contents as readable, reviewable text.

``assert table_state(db, "users", "posts") == snapshot`` stores a block per table and a
row per line through syrupy (``--snapshot-update`` writes it). Rows come in a stable
order, generated keys become labels (``users#1``) and so do the foreign keys pointing
at them, volatile columns (clock timestamps, random uuids, sequence values) are masked.

Every function takes a ``Session``, ``Connection`` or ``Engine``; given an
``AsyncSession``, ``AsyncConnection`` or ``AsyncEngine`` it returns an awaitable:
``await table_state(async_db, "users")``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from dbtest.state._diff import assertrepr_compare, diff_texts
from dbtest.state._tables import MaskSpec, OrderSpec
from dbtest.state._values import Changes, DbState, QueryState, SchemaState, TableState

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from dbtest.state._syrupy import DbtestSnapshotExtension

    SyncTarget = Session | Connection | Engine
    AsyncTarget = AsyncSession | AsyncConnection | AsyncEngine

__all__ = ["Changes", "DbState", "DbtestSnapshotExtension", "QueryState", "SchemaState",
           "TableState", "assertrepr_compare", "changes", "diff_texts", "query_state",
           "schema_state", "table_state"]


@overload
def table_state(db: AsyncTarget, *tables: Any, order_by: OrderSpec = None,
                mask: MaskSpec = None, labels: bool = True) -> Awaitable[TableState]: ...
@overload
def table_state(db: SyncTarget, *tables: Any, order_by: OrderSpec = None,
                mask: MaskSpec = None, labels: bool = True) -> TableState: ...
def table_state(db: Any, *tables: Any, order_by: OrderSpec = None, mask: MaskSpec = None,
                labels: bool = True) -> Any:
    """The rows of ``tables`` (names, Table objects or mapped classes; all when none).

    - ``order_by``: ``{"table": "col"}`` / ``{"table": ["a", "b"]}`` (or a column list
      when one table is given); default the primary key. A table with neither raises
      :class:`~dbtest.errors.SnapshotError`.
    - ``mask``: columns to hide as ``<masked>`` (``["users.password_hash", "token"]``),
      or a mapping whose ``False`` values keep a column dbtest would mask by itself.
    - ``labels``: show generated keys as ``users#1`` (position in the table's order) and
      foreign keys pointing at them as the same label; ``False`` shows raw ids.
    """
    from dbtest.state._api import dispatch, table_state_sync

    return dispatch(db, lambda conn: table_state_sync(conn, tables, order_by, mask, labels))


@overload
def query_state(db: AsyncTarget, query: Any, params: Mapping[str, Any] | None = None, *,
                name: str = "query", order: str = "auto", mask: Sequence[str] | None = None,
                labels: Mapping[str, Any] | None = None) -> Awaitable[QueryState]: ...
@overload
def query_state(db: SyncTarget, query: Any, params: Mapping[str, Any] | None = None, *,
                name: str = "query", order: str = "auto", mask: Sequence[str] | None = None,
                labels: Mapping[str, Any] | None = None) -> QueryState: ...
def query_state(db: Any, query: Any, params: Mapping[str, Any] | None = None, *,
                name: str = "query", order: str = "auto", mask: Sequence[str] | None = None,
                labels: Mapping[str, Any] | None = None) -> Any:
    """The rows of a ``select()`` or SQL text (``:name`` parameters from ``params``).

    ``order="auto"`` keeps the query's order when it has an ORDER BY and sorts the lines
    otherwise (heap order is not stable); ``"query"`` / ``"sorted"`` force either.
    ``mask`` hides columns; ``labels={"author_id": "users"}`` shows a column as labels
    of that table's generated key, like :func:`table_state` does.
    """
    from dbtest.state._api import dispatch, query_state_sync

    return dispatch(db, lambda conn: query_state_sync(conn, query, params, name, order, mask,
                                                      labels))


@overload
def schema_state(db: AsyncTarget) -> Awaitable[SchemaState]: ...
@overload
def schema_state(db: SyncTarget) -> SchemaState: ...
def schema_state(db: Any) -> Any:
    """Tables (columns, constraints, indexes, triggers), views, enums, sequences and
    extensions, as text; dbtest's own leak-check objects are left out."""
    from dbtest.state._api import dispatch
    from dbtest.state._schema import schema_state_sync

    return dispatch(db, schema_state_sync)


@overload
def changes(db: AsyncTarget, *tables: Any, since: TableState | None = None,
            order_by: OrderSpec = None, mask: MaskSpec = None,
            labels: bool = True) -> Awaitable[Changes]: ...
@overload
def changes(db: SyncTarget, *tables: Any, since: TableState | None = None,
            order_by: OrderSpec = None, mask: MaskSpec = None, labels: bool = True) -> Changes: ...
def changes(db: Any, *tables: Any, since: TableState | None = None, order_by: OrderSpec = None,
            mask: MaskSpec = None, labels: bool = True) -> Any:
    """Rows inserted (``+``), updated (``~``, changed cells only) and deleted (``-``) in
    ``tables`` (all when none) since the test started.

    The start state is what a second connection sees: under savepoint isolation (the
    ``db`` fixture) that is the database before the test, because nothing the test did
    is committed. A test that commits for real (``fresh_db``) passes
    ``since=table_state(db)`` taken at its start. Labels number existing rows as at the
    start and new rows after them.
    """
    from dbtest.state._api import dispatch
    from dbtest.state._changes import changes_sync

    return dispatch(db, lambda conn: changes_sync(conn, tables, since, order_by, mask, labels))


def __getattr__(name: str) -> Any:
    if name == "DbtestSnapshotExtension":  # imports syrupy: only on demand
        from dbtest.errors import require_extra

        require_extra("syrupy", "snapshots", "DbtestSnapshotExtension")
        from dbtest.state._syrupy import DbtestSnapshotExtension

        return DbtestSnapshotExtension
    raise AttributeError(f"module 'dbtest.state' has no attribute {name!r}")
