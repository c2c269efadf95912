"""``plug_app`` with an async app's session factories: ``async_sessionmaker`` and
``async_scoped_session`` (by import path or ``fixture:`` name), on pytest-asyncio and on
anyio tests.

The app below commits through its own factories, as a request handler would. In a savepoint
test that commit must land in the test's transaction (the test's ``async_db`` sees it, the
next test does not, the leak check stays quiet); in a fresh test it commits for real.
"""

from __future__ import annotations

import pytest

pytest.importorskip("asyncpg", reason="async fixtures need dbtest[async] (asyncpg)")

ASYNC_APP = """
import asyncio
import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_scoped_session, async_sessionmaker, create_async_engine

engine = create_async_engine(os.environ["APP_URL"])   # built at import, never used as is
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
Scoped = async_scoped_session(async_sessionmaker(engine), scopefunc=asyncio.current_task)


async def add(name):                 # the app's own unit of work: it commits
    async with SessionLocal() as session:
        await session.execute(text("INSERT INTO things VALUES (:n)"), {"n": name})
        await session.commit()


async def add_in_a_task_of_its_own(name):   # like a request handler
    await asyncio.create_task(add(name))
    session = Scoped()
    await session.execute(text("INSERT INTO things VALUES (:n)"), {"n": name + "-scoped"})
    await session.commit()
"""

TESTS = """
import pytest
from sqlalchemy import text

import asyncapp

COUNT = text("SELECT count(*) FROM things")


async def test_1_app_commits_join_the_test_transaction(async_db):
    await asyncapp.add_in_a_task_of_its_own("a")
    assert await async_db.scalar(COUNT) == 2          # same transaction
    assert asyncapp.Scoped() is async_db


async def test_2_nothing_leaked(async_db):
    assert await async_db.scalar(COUNT) == 0


@pytest.mark.anyio
async def test_3_on_anyio(async_db):
    await asyncapp.add("b")
    assert await async_db.scalar(COUNT) == 1


@pytest.mark.dbtest(isolation="fresh")
async def test_4_fresh_commits_for_real(async_db, fresh_db):
    await asyncapp.add("c")
    with fresh_db.engine.connect() as conn:           # a connection of its own sees it
        assert conn.scalar(COUNT) == 1
    await asyncapp.engine.dispose()


def test_5_a_sync_test_leaves_the_async_factories_alone():
    assert asyncapp.SessionLocal.kw["bind"] is asyncapp.engine
    assert "join_transaction_mode" not in asyncapp.SessionLocal.kw


async def test_6_factories_restored_after_each_test(async_db):
    await asyncapp.add("d")
    assert await async_db.scalar(COUNT) == 1


async def test_7_a_factory_made_by_a_fixture(maker, async_db):
    async with maker() as session:
        await session.execute(text("INSERT INTO things VALUES ('e')"))
        await session.commit()
    assert await async_db.scalar(COUNT) == 1


async def test_8_nothing_leaked_from_it(async_db):
    assert await async_db.scalar(COUNT) == 0
"""

CONFTEST = """
import pytest

from dbtest import plug_app

import dbtest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

dbtest_app = plug_app("asyncapp:engine", "asyncapp:SessionLocal", "asyncapp:Scoped",
                      "fixture:maker")


@pytest.fixture(scope="session")
def maker(pytestconfig):             # the app's tests build their own factory
    return async_sessionmaker(create_async_engine(dbtest.database_url(pytestconfig, "asyncpg")))


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


def test_async_session_factories(pytester: pytest.Pytester,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "postgresql+asyncpg://app:secret@db.invalid:5432/app")
    monkeypatch.setenv("DBTEST_SCHEMA", "sql:schema.sql")
    pytester.makefile(".sql", schema="CREATE TABLE things (name text);")
    pytester.makepyfile(asyncapp=ASYNC_APP, test_app=TESTS)
    pytester.makeconftest(CONFTEST)
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\n'
                               'asyncio_default_fixture_loop_scope = "function"\n'
                               'pythonpath = ["."]\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           "-W", "error::pytest.PytestWarning")
    result.assert_outcomes(passed=8)


def test_async_factory_without_its_fixtures_is_left_alone(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          ) -> None:
    # the same app, unplugged: its commit reaches the worker database and the leak check
    # reports it (the test above passing is not an accident of the schema)
    monkeypatch.setenv("APP_URL", "postgresql+asyncpg://app:secret@db.invalid:5432/app")
    monkeypatch.setenv("DBTEST_SCHEMA", "sql:schema.sql")
    pytester.makefile(".sql", schema="CREATE TABLE things (name text);")
    pytester.makepyfile(asyncapp=ASYNC_APP)
    pytester.makepyfile(test_leak="import asyncapp\n\n"
                        "async def test_commits(async_db):\n"
                        "    await asyncapp.add('x')\n")
    pytester.makeconftest("from dbtest import plug_app\n\n"
                          "dbtest_app = plug_app('asyncapp:engine')\n")
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\n'
                               'asyncio_default_fixture_loop_scope = "function"\n'
                               'pythonpath = ["."]\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*LeakError*things*"])


FRESH_FACTORY_TESTS = """
import pytest
from sqlalchemy import text

import asyncapp

COUNT = text("SELECT count(*) FROM things")


@pytest.mark.asyncio  # it uses no async fixture of dbtest's: marked as its project would
@pytest.mark.dbtest(isolation="fresh")
async def test_the_factory_commits_to_the_fresh_database(request, dbtest_app, fresh_db):
    await asyncapp.add("f")
    with fresh_db.engine.connect() as conn:           # a connection of its own sees it
        assert conn.scalar(COUNT) == 1
    # its factory opens its own connections there: no test session was set up for it
    assert dbtest_app is None and "async_db" not in request.fixturenames


async def test_nothing_reached_the_worker_database(async_db):
    assert await async_db.scalar(COUNT) == 0
"""


def test_fresh_tests_bind_factories_without_a_test_session(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           ) -> None:
    monkeypatch.setenv("APP_URL", "postgresql+asyncpg://app:secret@db.invalid:5432/app")
    monkeypatch.setenv("DBTEST_SCHEMA", "sql:schema.sql")
    pytester.makefile(".sql", schema="CREATE TABLE things (name text);")
    pytester.makepyfile(asyncapp=ASYNC_APP, test_app=FRESH_FACTORY_TESTS)
    pytester.makeconftest("from dbtest import plug_app\n\n"
                          "dbtest_app = plug_app('asyncapp:SessionLocal')\n")
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\n'
                               'asyncio_default_fixture_loop_scope = "function"\n'
                               'pythonpath = ["."]\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           "-W", "error::pytest.PytestWarning")
    result.assert_outcomes(passed=2)
