"""Tests run by anyio's pytest plugin (``@pytest.mark.anyio``, as FastAPI's docs write them):
``async_db`` opens, uses and closes its connection on anyio's runner, with the project's own
anyio fixtures on the same loop, and no connection is left unclosed. Found by running a
public FastAPI app's suite (benchmarks/apps/async-fastapi-sqlalchemy): every database test
stopped with "marked @pytest.mark.anyio, but dbtest's async fixtures run on pytest-asyncio's
event loops"."""

from __future__ import annotations

import pytest

from dbtest.provision._server import PostgresServer
from tests._projects import ITEM_MODELS

pytest_plugins = ["pytester"]
pytest.importorskip("anyio", reason="anyio is not installed: no anyio tests to run")

MODELS = ITEM_MODELS

#: a FastAPI-style suite: an anyio backend fixture, an async fixture of the project's own,
#: the app's sessionmaker bound to the test's connection, commits, and an unmarked test that
#: asks for anyio_backend (anyio's plugin runs it too)
ANYIO_TESTS = '''
import asyncio
import gc

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app_models import Item


@pytest.fixture(scope="module", params=[pytest.param("asyncio", id="asyncio")])
def anyio_backend(request):
    return request.param


@pytest.fixture
async def app_loop():
    yield asyncio.get_running_loop()


async def check(async_db, async_db_connection, app_loop, name):
    raw = await async_db_connection.get_raw_connection()
    assert raw.driver_connection._loop is asyncio.get_running_loop() is app_loop
    maker = async_sessionmaker(bind=async_db_connection,
                               join_transaction_mode="create_savepoint")
    async with maker.begin() as session:  # the app's own session, as its code opens it
        session.add(Item(name=name))
    item = Item(name=name + " too")
    async_db.add(item)
    await async_db.commit()
    assert item.name == name + " too"  # not expired
    assert await async_db.scalar(select(func.count()).select_from(Item)) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("i", range(3))
async def test_marked(async_db, async_db_connection, app_loop, i):
    await check(async_db, async_db_connection, app_loop, f"marked {i}")


async def test_unmarked(async_db, async_db_connection, app_loop, anyio_backend):
    await check(async_db, async_db_connection, app_loop, "unmarked")


def test_sync_beside(db):
    assert db.scalar(select(func.count()).select_from(Item)) == 0


def pytest_sessionfinish(session):
    gc.collect()  # an unclosed asyncpg connection warns when it is collected
'''


def make_project(p: pytest.Pytester) -> None:
    p.makepyfile(app_models=MODELS)
    p.makefile(".toml", pyproject='[tool.dbtest]\nschema = "metadata:app_models:Base"\n'
               '[tool.pytest.ini_options]\npythonpath = ["."]\nfilterwarnings = ["error"]\n')


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error::ResourceWarning",
                                  "-W", "error::pytest.PytestUnraisableExceptionWarning",
                                  *args)


@pytest.fixture
def on_this_server(monkeypatch: pytest.MonkeyPatch, dbtest_server: PostgresServer) -> None:
    """Inner runs use this run's server: no server start per pytester run."""
    monkeypatch.setenv("DBTEST_URL", dbtest_server.url)


@pytest.mark.usefixtures("on_this_server")
def test_anyio_tests_use_async_db_on_their_runner(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(test_anyio=ANYIO_TESTS)
    result = run(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=5)
    out = result.stdout.str() + result.stderr.str()
    for bad in ("unclosed connection", "ResourceWarning", "attached to a different loop",
                "another operation", "MissingGreenlet"):
        assert bad not in out, out


@pytest.mark.usefixtures("on_this_server")
def test_anyio_on_trio_gets_a_clear_error(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(test_trio='''
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "trio"

        @pytest.mark.anyio
        async def test_on_trio(async_db):
            pass
    ''')
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*runs on anyio's 'trio' backend, but dbtest's async "
                                 "fixtures use asyncpg, which needs asyncio*"])


@pytest.mark.usefixtures("on_this_server")
def test_anyio_under_auto_mode_gets_a_clear_error(pytester: pytest.Pytester) -> None:
    # pytest-asyncio's auto mode claims anyio tests too: with their fixtures on two loops,
    # the app's own fixtures fail the same way ("attached to a different loop")
    make_project(pytester)
    pytester.makepyfile(test_auto='''
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.anyio
        async def test_claimed_twice(async_db):
            pass
    ''')
    result = run(pytester, "-o", "asyncio_mode=auto",
                 "-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*is marked @pytest.mark.anyio, and pytest-asyncio runs it "
                                 "too*Keep pytest-asyncio's default asyncio_mode = \"strict\"*"])
