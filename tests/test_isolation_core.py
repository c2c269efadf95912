"""The isolation core (dbtest._isolation): one state machine for sync and async tests.

The sync and the async front run the same steps (:func:`start`, :func:`finish`) and so send
the same statements; the session is closed after the outer ROLLBACK, so no ROLLBACK TO
SAVEPOINT is spent on a transaction that is about to vanish.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dbtest
from dbtest._isolation import SAVEPOINT_MODE, TestTransaction
from dbtest._leakcheck import Checker
from dbtest._leaks import Tracker
from dbtest._workspace import Workspace
from dbtest.errors import LeakError
from dbtest.provision._server import PostgresServer


@pytest.fixture(scope="module")
def workspace(own_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Workspace]:
    from dbtest.settings import resolve

    root = tmp_path_factory.mktemp("core")
    (root / "schema.sql").write_text("CREATE TABLE notes (id serial PRIMARY KEY, body text);\n")
    settings = resolve({"schema": "sql:schema.sql", "seeds": str(root)}, environ={},
                       pyproject=None, root=Path(root))
    ws = Workspace(settings, server=own_server)
    yield ws
    ws.close()


def _record(engine: Engine) -> list[str]:
    """The statements and transaction steps SQLAlchemy sends on ``engine`` from now on."""
    sent: list[str] = []

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        sent.append(sql.split(" (")[0].split(" VALUES")[0])

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "begin", lambda conn: sent.append("BEGIN"))
    event.listen(engine, "rollback", lambda conn: sent.append("ROLLBACK"))
    return sent


def _count(ws: Workspace) -> int:
    with ws.worker_database(ws.default_key()).engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM notes").scalar_one())


#: what a test that inserts, commits and inserts again sends beside the leak checks (run on
#: the DBAPI cursor, unseen here): the savepoints of its commits, one ROLLBACK at the end
EXPECTED = ["BEGIN", "SAVEPOINT sa_savepoint_1", "INSERT INTO notes", "RELEASE SAVEPOINT "
            "sa_savepoint_1", "SAVEPOINT sa_savepoint_2", "INSERT INTO notes", "ROLLBACK"]


def test_sync_test_transaction_sends_one_rollback(workspace: Workspace) -> None:
    checker = Checker(workspace, workspace.default_key(), "sync", Tracker())
    sent = _record(checker.worker().engine)
    tx = TestTransaction(checker)
    conn = tx.open()
    tx.session = session = Session(bind=conn, join_transaction_mode=SAVEPOINT_MODE)
    session.execute(text("INSERT INTO notes (body) VALUES ('a')"))
    session.commit()
    session.execute(text("INSERT INTO notes (body) VALUES ('b')"))
    tx.close(conn)
    assert sent == EXPECTED
    assert _count(workspace) == 0
    assert not session.in_transaction()  # closed, after the rollback


async def test_async_test_transaction_sends_the_same(workspace: Workspace) -> None:
    checker = Checker(workspace, workspace.default_key(), "async", Tracker())
    sent = _record(checker.worker().async_engine().sync_engine)
    tx = TestTransaction(checker)
    conn = await tx.aopen()
    session = AsyncSession(bind=conn, join_transaction_mode=SAVEPOINT_MODE)
    await session.execute(text("INSERT INTO notes (body) VALUES ('a')"))
    await session.commit()
    await session.execute(text("INSERT INTO notes (body) VALUES ('b')"))
    await tx.aclose(conn, session)
    assert sent == EXPECTED
    assert _count(workspace) == 0
    await checker.worker().async_engine().dispose()


def test_savepoint_context_manager_sends_the_same(workspace: Workspace) -> None:
    engine = workspace.worker_database(workspace.default_key()).engine
    sent = _record(engine)
    with dbtest.savepoint(engine) as session:
        session.execute(text("INSERT INTO notes (body) VALUES ('a')"))
        session.commit()
        session.execute(text("INSERT INTO notes (body) VALUES ('b')"))
    assert sent == EXPECTED
    assert _count(workspace) == 0


async def test_async_path_finds_and_reports_a_leak(workspace: Workspace) -> None:
    """A commit made beside an async test is found at its end, the database is reset, and
    the next test starts clean: the same checks as the sync path (test_isolation.py)."""
    tracker = Tracker()
    checker = Checker(workspace, workspace.default_key(), "leaky", tracker)
    tx = TestTransaction(checker)
    conn = await tx.aopen()
    with checker.worker().engine.begin() as other:  # the app's own engine commits for real
        other.exec_driver_sql("INSERT INTO notes (body) VALUES ('leak')")
    with pytest.raises(LeakError, match=r"^leaky committed data outside its savepoint.*"
                                        r"rows in public\.notes"):
        await tx.aclose(conn)
    assert not conn.in_transaction()
    assert conn.closed
    after = TestTransaction(Checker(workspace, workspace.default_key(), "after", tracker))
    conn = await after.aopen()  # the reset database: clean
    assert (await conn.exec_driver_sql("SELECT count(*) FROM notes")).scalar_one() == 0
    await after.aclose(conn)
    await checker.worker().async_engine().dispose()


async def test_async_start_check_blames_earlier_tests(workspace: Workspace) -> None:
    tracker = Tracker()
    with workspace.worker_database(workspace.default_key()).engine.begin() as other:
        other.exec_driver_sql("INSERT INTO notes (body) VALUES ('sneaky')")
    tracker.since_clean[workspace.worker_database(workspace.default_key()).name] = ["t0"]
    tx = TestTransaction(Checker(workspace, workspace.default_key(), "t1", tracker))
    with pytest.raises(LeakError, match=r"found when t1 started.*committed by t0, the only"):
        await tx.aopen()
    checker = Checker(workspace, workspace.default_key(), "t2", tracker)
    tx = TestTransaction(checker)
    conn = await tx.aopen()
    await tx.aclose(conn)
    await checker.worker().async_engine().dispose()
