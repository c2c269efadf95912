"""dbtest.savepoint / dbtest.async_savepoint: the same isolation without pytest fixtures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import dbtest
from dbtest._workspace import Workspace
from dbtest.provision._server import PostgresServer


@pytest.fixture(scope="module")
def engine(own_server: PostgresServer) -> Iterator[Engine]:
    own_server.create_database("iso_plain", purpose="test")
    eng = create_engine(own_server.url_for("iso_plain"))
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)"))
    yield eng
    eng.dispose()
    own_server.drop_database("iso_plain")


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM notes")).scalar_one())


def test_commit_inside_savepoint_is_rolled_back(engine: Engine) -> None:
    with dbtest.savepoint(engine) as session:
        session.execute(text("INSERT INTO notes (body) VALUES ('a')"))
        session.commit()  # application code may commit
        session.execute(text("INSERT INTO notes (body) VALUES ('b')"))
        session.rollback()  # ...and roll back to its last commit
        assert session.execute(text("SELECT count(*) FROM notes")).scalar() == 1
        with session.begin_nested():
            session.execute(text("INSERT INTO notes (body) VALUES ('c')"))
        assert session.execute(text("SELECT count(*) FROM notes")).scalar() == 2
        assert count(engine) == 0  # nothing is visible to other connections
    assert count(engine) == 0


def test_exception_still_rolls_back(engine: Engine) -> None:
    with pytest.raises(RuntimeError), dbtest.savepoint(engine) as session:
        session.execute(text("INSERT INTO notes (body) VALUES ('a')"))
        session.commit()
        raise RuntimeError("boom")
    assert count(engine) == 0


def test_integrity_error_then_continue(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    with dbtest.savepoint(engine) as session:
        session.execute(text("INSERT INTO notes (body) VALUES ('ok')"))
        session.commit()
        with pytest.raises(IntegrityError):
            session.execute(text("INSERT INTO notes (body) VALUES (NULL)"))
            session.commit()
        session.rollback()
        assert session.execute(text("SELECT count(*) FROM notes")).scalar() == 1
    assert count(engine) == 0


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_async_savepoint(own_server: PostgresServer, engine: Engine, driver: str) -> None:
    aengine = create_async_engine(own_server.url_for("iso_plain", driver), poolclass=NullPool)
    try:
        async with dbtest.async_savepoint(aengine) as session:
            await session.execute(text("INSERT INTO notes (body) VALUES ('x')"))
            await session.commit()
            async with session.begin_nested():
                await session.execute(text("INSERT INTO notes (body) VALUES ('y')"))
            result = await session.execute(select(func.count()).select_from(text("notes")))
            assert result.scalar() == 2
            assert count(engine) == 0
    finally:
        await aengine.dispose()
    assert count(engine) == 0


# -- leak checks through the API the fixtures use (dbtest._leakcheck) ------------------------
def _workspace(server: PostgresServer, tmp_path: Path) -> Workspace:
    from dbtest.settings import resolve

    # a template of this role's own (a role builds and owns its templates' tables)
    (tmp_path / "schema.sql").write_text("CREATE TABLE notes (id serial PRIMARY KEY, body text);"
                                         f"\n-- {server.params.user}\n")
    settings = resolve({"schema": "sql:schema.sql", "seeds": str(tmp_path)}, environ={},
                       pyproject=None, root=tmp_path)
    return Workspace(settings, server=server)


@pytest.fixture(params=["event triggers", "catalog fingerprint"])
def leak_workspace(request: pytest.FixtureRequest, own_server: PostgresServer,
                   tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose worker database records DDL with event triggers (superuser), or,
    for a role that is not superuser, with the catalog fingerprint."""
    server = own_server
    if request.param == "catalog fingerprint":
        import psycopg

        with psycopg.connect(own_server.dsn, autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS plain_creator")
            conn.execute("CREATE ROLE plain_creator LOGIN CREATEDB")
            conn.execute("GRANT pg_read_all_data TO plain_creator")
        server = PostgresServer(replace(own_server.params, user="plain_creator"),
                                own_server.version, "url", own_server.version_num)
    ws = _workspace(server, tmp_path)
    yield ws
    ws.close()


def test_every_kind_of_leak_is_found_and_blamed(leak_workspace: Workspace) -> None:
    from dbtest._leakcheck import Checker
    from dbtest._leaks import Tracker
    from dbtest.errors import LeakError

    ws, tracker = leak_workspace, Tracker()
    key = ws.default_key()
    events = ws.worker_database(key).ddl_events
    assert events == (ws.server.params.user != "plain_creator")

    def test(name: str, body: str, *, own: str = "") -> None:
        checker = Checker(ws, key, name, tracker)
        worker, conn = checker.begin()
        try:
            if own:
                conn.exec_driver_sql(own)  # the test's own writes: rolled back, no leak
            if body:
                with worker.engine.begin() as other:
                    other.exec_driver_sql(body)
        finally:
            checker.end(worker, conn)
        tracker.ran(name)

    test("own", "", own="CREATE TABLE scratch (id int); INSERT INTO notes (body) VALUES ('x')")
    cases = {"dml": ("INSERT INTO notes (body) VALUES ('x')", "rows in public.notes"),
             "ddl": ("CREATE SCHEMA tenant; CREATE TABLE tenant.t (id int); "
                     "INSERT INTO tenant.t VALUES (1)",
                     "CREATE SCHEMA tenant; CREATE TABLE tenant.t" if events else
                     "the catalog changed"),
             "drop": ("DROP TABLE notes", "DROP TABLE public.notes" if events else
                      "the catalog changed"),
             "alter": ("ALTER TABLE notes ADD COLUMN extra int", "ALTER TABLE public.notes"
                       if events else "the catalog changed")}
    for name, (body, what) in cases.items():
        with pytest.raises(LeakError, match=rf"^{name} committed data outside its savepoint"
                                            rf".*{re.escape(what)}"):
            test(name, body)
        test(f"after_{name}", "SELECT 1")  # the database was reset: clean again


def test_a_leak_between_tests_names_every_candidate(own_server: PostgresServer,
                                                    tmp_path: Path) -> None:
    from dbtest._leakcheck import Checker
    from dbtest._leaks import Tracker
    from dbtest.errors import LeakError

    ws, tracker = _workspace(own_server, tmp_path), Tracker()
    try:
        key = ws.default_key()
        checker = Checker(ws, key, "t1", tracker)
        checker.end(*checker.begin())
        tracker.ran("t1")
        with ws.worker_database(key).engine.begin() as conn:  # no fixture: the app's engine
            conn.exec_driver_sql("INSERT INTO notes (body) VALUES ('sneaky')")
        tracker.ran("t2")
        tracker.ran("t3")
        with pytest.raises(LeakError, match=r"found when t4 started.*rows in public\.notes; "
                                            r"committed by one of the 3 tests since the last "
                                            r"clean check: t1 \(in its fixtures' teardown, "
                                            r"after its own check\), t2, t3"):
            Checker(ws, key, "t4", tracker).begin()
        worker, conn = Checker(ws, key, "t5", tracker).begin()  # reset: clean again
        assert conn.exec_driver_sql("SELECT count(*) FROM notes").scalar() == 0
        Checker(ws, key, "t5", tracker).end(worker, conn)
    finally:
        ws.close()


def test_the_leak_record_does_not_grow_with_the_number_of_tests(own_server: PostgresServer,
                                                                tmp_path: Path) -> None:
    from dbtest._leakcheck import Checker
    from dbtest._leaks import VACUUM_EVERY, Tracker

    ws = _workspace(own_server, tmp_path)
    try:
        key = ws.default_key()
        checker = Checker(ws, key, "t", Tracker())
        for _ in range(VACUUM_EVERY + 1):  # each test's own records are rolled back
            worker, conn = checker.begin()
            conn.exec_driver_sql("INSERT INTO notes (body) VALUES ('x')")
            checker.end(worker, conn)
        with worker.engine.connect() as conn:
            size = conn.exec_driver_sql(
                "SELECT pg_relation_size('dbtest_internal.touched')").scalar()
        assert size is not None and size <= 8192  # dead rows vacuumed: a page at most
    finally:
        ws.close()
