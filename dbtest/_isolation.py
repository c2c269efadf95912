"""Savepoint isolation: a test's session lives inside an outer transaction.

The code under test may call ``commit()``, ``rollback()`` and ``begin_nested()``: with
``join_transaction_mode="create_savepoint"`` those act on a savepoint, and the outer
transaction is rolled back at the end, so nothing a test writes survives it. The same
machinery serves the pytest fixtures and the plain context managers here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["async_outer_transaction", "async_savepoint", "outer_transaction", "savepoint"]


@contextmanager
def outer_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that is always rolled back."""
    conn = engine.connect()
    trans = conn.begin()
    try:
        yield conn
    finally:
        if trans.is_active:
            trans.rollback()
        conn.close()


@contextmanager
def savepoint(engine_or_connection: Engine | Connection, **session_kwargs: Any
              ) -> Iterator[Session]:
    """A ``Session`` whose every change is rolled back on exit, ``commit()`` included.

    >>> with dbtest.savepoint(engine) as session:      # doctest: +SKIP
    ...     session.add(User(email="a@x.io")); session.commit()
    """
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    if isinstance(engine_or_connection, Connection):
        yield from _session_on(engine_or_connection, Session, session_kwargs)
        return
    with outer_transaction(engine_or_connection) as conn:
        yield from _session_on(conn, Session, session_kwargs)


def _session_on(conn: Any, cls: Any, kwargs: dict[str, Any]) -> Iterator[Any]:
    session = cls(bind=conn, join_transaction_mode="create_savepoint", **kwargs)
    try:
        yield session
    finally:
        session.close()


@asynccontextmanager
async def async_outer_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """An async connection inside a transaction that is always rolled back."""
    conn = await engine.connect()
    trans = await conn.begin()
    try:
        yield conn
    finally:
        if trans.is_active:
            await trans.rollback()
        await conn.close()


@asynccontextmanager
async def async_savepoint(engine_or_connection: AsyncEngine | AsyncConnection,
                          **session_kwargs: Any) -> AsyncIterator[AsyncSession]:
    """The ``AsyncSession`` form of :func:`savepoint` (asyncpg or psycopg async)."""
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(engine_or_connection, AsyncConnection):
        session = AsyncSession(bind=engine_or_connection,
                               join_transaction_mode="create_savepoint", **session_kwargs)
        try:
            yield session
        finally:
            await session.close()
        return
    async with async_outer_transaction(engine_or_connection) as conn:
        session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint",
                               **session_kwargs)
        try:
            yield session
        finally:
            await session.close()
