"""The leak checks at test boundaries, shared by the sync and async fixtures and the
plugin's hooks (the SQL and the bookkeeping are in :mod:`dbtest._leaks`).

Every test that uses the worker database is checked twice: when it starts (inside its
transaction, before anything of its own is written: whatever is recorded then was
committed since the last clean check, by the tests that ran in between) and when it ends
(inside its transaction, just before the rollback: records of other transactions were
committed during the test). Tests that use ``db_engine`` / ``async_db_engine`` without a
savepoint fixture are checked the same way by the plugin's setup and teardown hooks.
When a check finds something, the worker database is replaced by a new clone.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from dbtest._leaks import (
    RECORD_DROPPED,
    VACUUM,
    Tracker,
    check_query,
    is_missing_record,
    leak_message,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dbtest._templates import TemplateKey
    from dbtest._workspace import WorkerDatabase, Workspace

__all__ = ["Checker"]


class Checker:
    """One test's leak checks on one worker database.

    :meth:`at_start` and :meth:`at_end` run the queries on a sync ``Connection`` (the async
    fixtures run them in SQLAlchemy's greenlet through ``AsyncConnection.run_sync``: one
    code path); :meth:`found` acts on what they found. The connection's lifecycle around
    them is :class:`dbtest._isolation.TestTransaction`'s.
    """

    def __init__(self, workspace: Workspace, key: TemplateKey, test: str,
                 tracker: Tracker) -> None:
        self.workspace = workspace
        self.key = key
        self.test = test
        self.tracker = tracker

    def worker(self) -> WorkerDatabase:
        """The worker database the test runs on (cloned on first use)."""
        return self.workspace.worker_database(self.key)

    # -- the checks --------------------------------------------------------------------------
    def at_start(self, conn: Connection, worker: WorkerDatabase) -> list[str]:
        """What was committed since the last clean check (``conn`` has just begun the
        test's transaction: nothing in it is the test's own)."""
        return _run(conn, check_query(in_transaction=False, ddl_events=worker.ddl_events))

    def at_end(self, conn: Connection, worker: WorkerDatabase) -> list[str]:
        """What other transactions committed during the test: checked from inside the
        test's transaction before its rollback (one query), else after it. Rolls back."""
        records: list[str] | None = None
        if conn.in_transaction():
            query = check_query(in_transaction=True, ddl_events=worker.ddl_events)
            try:
                records = _run(conn, query) if query else None
            except Exception:  # e.g. the test left its transaction aborted
                records = None
            conn.rollback()
        if records is None:  # broken transaction, or no DDL events: check after it
            records = _run(conn, check_query(in_transaction=False,
                                             ddl_events=worker.ddl_events))
            conn.rollback()
        return records

    def found(self, worker: WorkerDatabase, records: list[str], *, at_setup: bool) -> None:
        """Record a clean check, or reset the database and report the leak (raises
        :class:`~dbtest.errors.LeakError` unless ``leaks = "warn"``)."""
        if not records:
            self.tracker.clean(worker.name)
            if not at_setup and self.tracker.vacuum_due(worker.name):
                _vacuum(worker)
            return
        suspects = self.tracker.suspects(worker.name)
        self.workspace.reset_worker_database(self.key)  # the next test starts clean either way
        self.tracker.clean(worker.name)
        report(leak_message(records, test=self.test, at_setup=at_setup, suspects=suspects),
               self.workspace.settings.leaks)

    # -- the sync lifecycle, for callers without a fixture (tests, bench_leaks.py) ----------
    def begin(self) -> tuple[WorkerDatabase, Connection]:
        """The test's connection, inside its transaction, after the start check."""
        from dbtest._isolation import TestTransaction

        tx = TestTransaction(self)
        conn = tx.open()
        assert tx.worker is not None
        return tx.worker, conn

    def end(self, worker: WorkerDatabase, conn: Connection) -> None:
        """Check before the rollback (one query), roll back, close, report."""
        from dbtest._isolation import TestTransaction

        tx = TestTransaction(self)
        tx.worker = worker
        tx.close(conn)

    def check_committed(self, *, at_setup: bool) -> None:
        """Check the worker database from a connection of its own (for tests that use
        only ``db_engine`` / ``async_db_engine``)."""
        worker = self.workspace.existing_worker(self.key)
        if worker is None:
            return
        with worker.engine.connect() as conn:
            records = _run(conn, check_query(in_transaction=False,
                                             ddl_events=worker.ddl_events))
            conn.rollback()
        self.found(worker, records, at_setup=at_setup)


def _vacuum(worker: WorkerDatabase) -> None:
    """Clear the dead rows of the leak record (outside any transaction; ~1 ms)."""
    with worker.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(VACUUM)


def _records(rows: Any) -> list[str]:
    return sorted({str(r[0]) for r in rows})


def _run(conn: Connection, query: str | None) -> list[str]:
    """Run ``query`` through the DBAPI cursor: SQLAlchemy's statement machinery would be
    most of the check's cost. The query has no parameters (psycopg sends it as is)."""
    if query is None:
        return []
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(query)
        return _records(cursor.fetchall())
    except Exception as exc:
        if not is_missing_record(exc):
            raise
        conn.rollback()
        return [RECORD_DROPPED]
    finally:
        cursor.close()


def report(message: str, mode: str) -> None:
    """Raise :class:`~dbtest.errors.LeakError`, or warn when ``leaks = "warn"``."""
    if mode == "warn":
        import pytest

        warnings.warn(message, pytest.PytestWarning, stacklevel=2)
        return
    from dbtest.errors import LeakError

    raise LeakError(message)
