"""Savepoint isolation: one core for the pytest fixtures and the context managers.

One isolated test is a small state machine on one connection::

    connect -> BEGIN (the outer transaction) -> [leak check at the start]
            -> the session joins it with join_transaction_mode="create_savepoint"
               (SAVEPOINT on first use; the app's commit() / rollback() release or roll
               back that savepoint, and SQLAlchemy starts a new one on the next use)
            -> [leak check at the end, inside the outer transaction] -> ROLLBACK
            -> close the session (nothing left to roll back) -> close

Nothing the test writes survives it, ``commit()`` included. The steps between connect and
close are plain functions on a sync ``Connection`` (:func:`start`, :func:`finish`): the sync
front calls them directly, the async front runs each in one greenlet through SQLAlchemy's
``AsyncConnection.run_sync``, so sync and async share the logic and differ only in the
I/O of connecting and closing. That is also the cheapest async path: one trip through the
greenlet per step instead of one ``await`` per statement. The leak checks and what to do
with what they find are :mod:`dbtest._leakcheck`'s; the context managers run without them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from dbtest._leakcheck import Checker
    from dbtest._workspace import WorkerDatabase

__all__ = ["SAVEPOINT_MODE", "TestTransaction", "async_outer_transaction", "async_savepoint",
           "finish", "outer_transaction", "savepoint", "start"]

#: how a test's session joins the outer transaction (SQLAlchemy's "joining a Session into
#: an external transaction" recipe): its commit() and rollback() act on a savepoint
SAVEPOINT_MODE: Final = "create_savepoint"


# -- the core: the steps on a sync connection -------------------------------------------------
def start(conn: Connection, checker: Checker | None = None, worker: WorkerDatabase | None = None
          ) -> list[str]:
    """BEGIN the outer transaction and, with a ``checker``, run the start check in it.

    Returns the leak records found (the transaction is rolled back then: the caller closes
    the connection and lets the checker reset the database); ``[]`` when clean.
    """
    conn.begin()
    if worker is not None and worker.sequence_reset is not None:
        conn.exec_driver_sql(worker.sequence_reset)  # reset_sequences: see dbtest._sequences
    if checker is None or worker is None:
        return []
    records = checker.at_start(conn, worker)
    if records and conn.in_transaction():
        conn.rollback()
    return records


def finish(conn: Connection, session: Session | None = None, checker: Checker | None = None,
           worker: WorkerDatabase | None = None) -> list[str]:
    """Run the end check inside the outer transaction (with a ``checker``), roll it back,
    then close ``session``. Returns the leak records found.

    The session is closed after the rollback on purpose: closing it first would roll back
    its savepoint, a round trip the outer ROLLBACK makes useless (SQLAlchemy sends nothing
    for a savepoint whose outer transaction is gone). The check reads the records of
    other transactions, so the test's open savepoint does not matter to it.
    """
    try:
        if checker is not None and worker is not None:
            return checker.at_end(conn, worker)  # rolls back
        if conn.in_transaction():
            conn.rollback()
        return []
    finally:
        if session is not None:
            session.close()


def savepoint_session(conn: Any, session_class: Any, **kwargs: Any) -> Any:
    """A session (sync or async) on ``conn`` whose commits and rollbacks act on savepoints."""
    return session_class(bind=conn, join_transaction_mode=SAVEPOINT_MODE, **kwargs)


# -- one test on its worker database, with the leak checks --------------------------------------
class TestTransaction:
    """A test's outer transaction on its worker database, checked for leaks at both ends.

    :meth:`open` / :meth:`close` for a sync connection, :meth:`aopen` / :meth:`aclose` for
    an async one on the running loop's pool; both run :func:`start` and :func:`finish`.
    """

    __test__ = False  # not a test class for pytest

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.worker: WorkerDatabase | None = None
        #: the test's session, closed by :meth:`close` after the rollback (see :func:`finish`)
        self.session: Session | None = None

    def open(self) -> Connection:
        """The test's connection, inside its transaction, after the start check."""
        worker = self.checker.worker()
        conn = worker.engine.connect()
        records = _guarded(start, conn, self.checker, worker)
        if records:  # committed by earlier tests: the database is reset below
            conn.close()
        self.checker.found(worker, records, at_setup=True)  # raises unless leaks = "warn"
        if records:
            worker = self.checker.worker()  # the new clone, clean
            conn = worker.engine.connect()
            start(conn)
        self.worker = worker
        return conn

    def close(self, conn: Connection) -> None:
        """Check what this test committed, roll back, close :attr:`session`, report."""
        assert self.worker is not None, "close() before open()"
        try:
            records = finish(conn, self.session, self.checker, self.worker)
        finally:
            conn.close()
        self.checker.found(self.worker, records, at_setup=False)

    async def aopen(self) -> AsyncConnection:
        """:meth:`open` on the running event loop's async engine."""
        worker = self.checker.worker()
        conn = await worker.async_engine().connect()
        records = await _aguarded(conn, start, self.checker, worker)
        if records:
            await _release(conn, worker)
        self.checker.found(worker, records, at_setup=True)
        if records:
            worker = self.checker.worker()
            conn = await worker.async_engine().connect()
            await conn.run_sync(start)
        self.worker = worker
        return conn

    async def aclose(self, conn: AsyncConnection, session: AsyncSession | None = None
                     ) -> None:
        """:meth:`close` for an async connection (and session): one greenlet for it all."""
        assert self.worker is not None, "aclose() before aopen()"
        sync_session = session.sync_session if session is not None else None
        try:
            records = await conn.run_sync(finish, sync_session, self.checker, self.worker)
        finally:
            await conn.close()
        if records:
            await _release(conn, self.worker)
        self.checker.found(self.worker, records, at_setup=False)


async def _release(conn: AsyncConnection, worker: WorkerDatabase) -> None:
    """Before a leak resets the worker database: close ``conn`` and this loop's pooled
    connections to it, on this loop. The reset drops the pool without closing them (their
    loop may be gone), and a dropped asyncpg connection warns ``unclosed connection``."""
    await conn.close()
    await worker.async_engine().dispose()


def _guarded(step: Callable[..., list[str]], conn: Connection, *args: Any) -> list[str]:
    """Run ``step``; on an error, close ``conn`` before it propagates."""
    try:
        return step(conn, *args)
    except BaseException:
        conn.close()
        raise


async def _aguarded(conn: AsyncConnection, step: Callable[..., list[str]], *args: Any
                    ) -> list[str]:
    """:func:`_guarded` in the greenlet of ``conn``."""
    try:
        return await conn.run_sync(step, *args)
    except BaseException:
        await conn.close()
        raise


# -- the context managers (no leak checks: no worker database of dbtest's) ----------------------
@contextmanager
def outer_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that is always rolled back."""
    conn = engine.connect()
    try:
        start(conn)
        yield conn
    finally:
        try:
            finish(conn)
        finally:
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

    if isinstance(engine_or_connection, Connection):  # the caller owns its transaction
        with savepoint_session(engine_or_connection, Session, **session_kwargs) as session:
            yield session
        return
    conn = engine_or_connection.connect()
    session = None
    try:
        start(conn)
        session = savepoint_session(conn, Session, **session_kwargs)
        yield session
    finally:
        try:
            finish(conn, session)
        finally:
            conn.close()


@asynccontextmanager
async def async_outer_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """An async connection inside a transaction that is always rolled back."""
    conn = await engine.connect()
    try:
        await conn.run_sync(start)
        yield conn
    finally:
        try:
            await conn.run_sync(finish)
        finally:
            await conn.close()


@asynccontextmanager
async def async_savepoint(engine_or_connection: AsyncEngine | AsyncConnection,
                          **session_kwargs: Any) -> AsyncIterator[AsyncSession]:
    """The ``AsyncSession`` form of :func:`savepoint` (asyncpg or psycopg async)."""
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(engine_or_connection, AsyncConnection):  # the caller owns its transaction
        session = savepoint_session(engine_or_connection, AsyncSession, **session_kwargs)
        try:
            yield session
        finally:
            await session.close()
        return
    conn = await engine_or_connection.connect()
    session = None
    try:
        await conn.run_sync(start)
        session = savepoint_session(conn, AsyncSession, **session_kwargs)
        yield session
    finally:
        try:
            await conn.run_sync(finish, session.sync_session if session is not None else None)
        finally:
            await conn.close()
