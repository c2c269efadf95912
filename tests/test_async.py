"""Async applications as they are: session options, event loops, zero config, no unclosed
connections. pytester projects run in a subprocess against this run's server (url backend),
with ``filterwarnings = ["error"]`` and ``-W error::ResourceWarning``."""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

# imported here, before pytester snapshots sys.modules (a re-import makes new classes)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from dbtest.provision._server import PostgresServer
from tests._projects import ITEM_MODELS

pytest_plugins = ["pytester"]

PA_VERSION = tuple(int(p) for p in importlib.metadata.version("pytest-asyncio").split(".")[:2])
#: pytest-asyncio 0.26 added asyncio_default_test_loop_scope
HAS_TEST_LOOP_SCOPE = PA_VERSION >= (0, 26)

MODELS = ITEM_MODELS

CONFTEST = '''
import gc


def pytest_sessionfinish(session):
    gc.collect()  # an unclosed asyncpg connection warns when it is collected
'''

#: every way a test can pick its loop; each checks that the session runs on the test's
#: loop and that an attribute reads after commit (expire_on_commit=False)
LOOP_TESTS = '''
import asyncio

import pytest
from sqlalchemy import func, select

from app_models import Item


async def check(async_db, async_db_connection, name):
    raw = await async_db_connection.get_raw_connection()
    assert raw.driver_connection._loop is asyncio.get_running_loop()
    item = Item(name=name)
    async_db.add(item)
    await async_db.commit()
    assert item.name == name  # not expired: no MissingGreenlet
    assert await async_db.scalar(select(func.count()).select_from(Item)) == 1


async def test_default(async_db, async_db_connection):
    await check(async_db, async_db_connection, "default")


@pytest.mark.asyncio(loop_scope="function")
async def test_function(async_db, async_db_connection):
    await check(async_db, async_db_connection, "function")


@pytest.mark.asyncio(loop_scope="module")
async def test_module(async_db, async_db_connection):
    await check(async_db, async_db_connection, "module")


@pytest.mark.asyncio(loop_scope="session")
async def test_session(async_db, async_db_connection):
    await check(async_db, async_db_connection, "session")


@pytest.mark.asyncio(loop_scope="class")
class TestClassLoop:
    async def test_one(self, async_db, async_db_connection):
        await check(async_db, async_db_connection, "class one")

    async def test_two(self, async_db, async_db_connection):
        await check(async_db, async_db_connection, "class two")


def test_sync_beside(db):
    assert db.scalar(select(func.count()).select_from(Item)) == 0
'''


def make_project(p: pytest.Pytester, ini: dict[str, str]) -> None:
    p.makepyfile(app_models=MODELS, conftest=CONFTEST)
    lines = "".join(f'{k} = "{v}"\n' for k, v in ini.items())
    p.makefile(".toml", pyproject='[tool.dbtest]\nschema = "metadata:app_models:Base"\n'
               '[tool.pytest.ini_options]\npythonpath = ["."]\nfilterwarnings = ["error"]\n'
               + lines)


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error::ResourceWarning",
                                  *args)


@pytest.fixture
def on_this_server(monkeypatch: pytest.MonkeyPatch, dbtest_server: PostgresServer) -> None:
    """Inner runs use this run's server: no server start per pytester run."""
    monkeypatch.setenv("DBTEST_URL", dbtest_server.url)


def assert_clean(result: pytest.RunResult) -> None:
    out = result.stdout.str() + result.stderr.str()
    for bad in ("unclosed connection", "ResourceWarning", "attached to a different loop",
                "another operation",
                "MissingGreenlet", "Deprecation"):
        assert bad not in out, out


def assert_on_their_loops(result: pytest.RunResult, total: int) -> None:
    """Every test passed on its loop; on pytest-asyncio < 1.2 (which mixes up loops itself
    when a run uses several loop scopes), tests on a second loop scope may instead stop
    with dbtest's one clear error, and nothing fails on a wrong loop."""
    if PA_VERSION >= (1, 2):
        result.assert_outcomes(passed=total)
    else:
        outcomes = result.parseoutcomes()
        errors = outcomes.get("errors", outcomes.get("error", 0))
        assert outcomes.get("failed", 0) == 0, result.stdout.str()
        assert outcomes.get("passed", 0) + errors == total, result.stdout.str()
        out = result.stdout.str()
        assert out.count("Upgrade pytest-asyncio to 1.2 or later") >= errors, out
    assert_clean(result)


FIXTURE_DEFAULTS = [None, "function", "module", "session"]
TEST_DEFAULTS = [None, "function", "module", "session"]


@pytest.mark.usefixtures("on_this_server")
@pytest.mark.parametrize("test_default", TEST_DEFAULTS, ids=lambda v: f"tests-{v}")
@pytest.mark.parametrize("fixture_default", FIXTURE_DEFAULTS, ids=lambda v: f"fixtures-{v}")
def test_loop_scope_matrix(pytester: pytest.Pytester, fixture_default: str | None,
                           test_default: str | None) -> None:
    """Strict mode (pytest-asyncio's default), each combination of the two loop-scope
    defaults, tests on every loop scope: all pass, on their own loop, warning-free."""
    if test_default is not None and not HAS_TEST_LOOP_SCOPE:
        pytest.skip(f"pytest-asyncio {PA_VERSION} has no asyncio_default_test_loop_scope")
    ini = {}
    if fixture_default:
        ini["asyncio_default_fixture_loop_scope"] = fixture_default
    if test_default:
        ini["asyncio_default_test_loop_scope"] = test_default
    make_project(pytester, ini)
    pytester.makepyfile(test_loops=LOOP_TESTS, test_loops_again=LOOP_TESTS)
    assert_on_their_loops(run(pytester), 14)


@pytest.mark.usefixtures("on_this_server")
def test_auto_mode_with_session_loops(pytester: pytest.Pytester) -> None:
    """The shape of the app in issue 20: auto mode, tests on a session-wide loop, fixtures
    on their default scope."""
    ini = {"asyncio_mode": "auto"}
    if HAS_TEST_LOOP_SCOPE:
        ini["asyncio_default_test_loop_scope"] = "session"
    make_project(pytester, ini)
    pytester.makepyfile(test_loops=LOOP_TESTS)
    assert_on_their_loops(run(pytester), 7)


@pytest.mark.usefixtures("on_this_server")
def test_zero_config_no_async_test(pytester: pytest.Pytester) -> None:
    """A project with no asyncio settings and no async test: no pytest-asyncio warning
    about its unset fixture loop scope, even under filterwarnings = error."""
    make_project(pytester, {})
    pytester.makepyfile(test_plain='''
        def test_plain():
            assert True

        def test_db(db):
            assert db.connection() is not None
    ''')
    result = run(pytester)
    result.assert_outcomes(passed=2)
    assert_clean(result)


@pytest.mark.usefixtures("on_this_server")
def test_zero_config_async_test_and_untouched_others(pytester: pytest.Pytester) -> None:
    """The README's async test runs with no asyncio settings; an ``async def`` test that
    uses no dbtest fixture is left to pytest-asyncio's strict mode (not run, as before)."""
    make_project(pytester, {})
    pytester.makepyfile(test_readme='''
        from sqlalchemy import text

        async def test_async(async_db):
            assert await async_db.scalar(text("select 1")) == 1

        async def test_engine(async_db_engine):
            async with async_db_engine.connect() as conn:
                assert await conn.scalar(text("select 2")) == 2
    ''')
    result = run(pytester)
    result.assert_outcomes(passed=2)
    assert_clean(result)


SESSION_OPTIONS = '''
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.ext.asyncio import AsyncSession

from app_models import Item


class AppSession(Session):
    pass


class AppAsyncSession(AsyncSession):
    pass


def test_sync_session(db):
    assert type(db) is AppSession
    assert db.info == {"tenant": "t1"} and db.autoflush is False
    item = Item(name="sync")
    db.add(item)
    db.commit()
    assert "name" in item.__dict__  # expire_on_commit = false from the setting


async def test_async_session(async_db):
    assert type(async_db) is AppAsyncSession
    assert async_db.info == {"tenant": "t1"}
    async_db.info["mutated"] = True  # a copy per test


async def test_info_is_per_test(async_db):
    assert async_db.info == {"tenant": "t1"}
'''


@pytest.mark.usefixtures("on_this_server")
def test_session_options_setting(pytester: pytest.Pytester) -> None:
    make_project(pytester, {})
    pytester.makepyfile(test_sessions=SESSION_OPTIONS)
    with open(pytester.path / "pyproject.toml", "a") as fh:
        fh.write(textwrap.dedent('''
            [tool.dbtest.session_options]
            expire_on_commit = false
            autoflush = false
            class = "test_sessions:AppSession"
            async_class = "test_sessions:AppAsyncSession"
            info = {tenant = "t1"}
        '''))
    result = run(pytester)
    result.assert_outcomes(passed=3)


@pytest.mark.usefixtures("on_this_server")
def test_async_expires_when_the_setting_says_so(pytester: pytest.Pytester) -> None:
    """``expire_on_commit = true`` brings SQLAlchemy's default back, and with it the
    MissingGreenlet of issue 20: the setting is what decides."""
    make_project(pytester, {})
    pytester.makepyfile(test_expire='''
        import pytest
        from sqlalchemy.exc import MissingGreenlet
        from app_models import Item

        async def test_expired(async_db):
            item = Item(name="x")
            async_db.add(item)
            await async_db.commit()
            with pytest.raises(MissingGreenlet):
                item.name
    ''')
    with open(pytester.path / "pyproject.toml", "a") as fh:
        fh.write('\n[tool.dbtest.session_options]\nexpire_on_commit = true\n')
    result = run(pytester)
    result.assert_outcomes(passed=1)


def test_session_options_from_an_app_factory() -> None:
    """The app-integration API passes the app's sessionmaker: its options are taken, the
    setting wins key by key, bind never comes from the app."""
    from dbtest._sessions import session_options
    from dbtest.settings import resolve

    class AppSession(AsyncSession):
        pass

    settings = resolve(environ={}, pyproject=None)
    app = async_sessionmaker(class_=AppSession, expire_on_commit=True, autoflush=False,
                             bind=None)
    opts = session_options(settings, asynchronous=True, app_factory=app)
    assert opts.session_class is AppSession
    assert dict(opts.options) == {"expire_on_commit": True, "autoflush": False}
    configured = settings.replace(session_options={"expire_on_commit": False})
    opts = session_options(configured, asynchronous=True, app_factory=app)
    assert opts.options["expire_on_commit"] is False
    sync = session_options(settings, app_factory=sessionmaker(autoflush=False))
    assert issubclass(sync.session_class, Session)  # sessionmaker makes a subclass
    assert dict(sync.options) == {"expire_on_commit": True, "autoflush": False}
    assert session_options(settings, asynchronous=True).options == {"expire_on_commit": False}


@pytest.mark.parametrize(("value", "message"), [
    ({"expire_on_commit": "no"}, "expire_on_commit must be true or false"),
    ({"expire": False}, "unknown session option(s) expire"),
    ({"class": "AppSession"}, "class must be '<module>:<attr>'"),
    ("{not json", "must be a JSON object"),
])
def test_bad_session_options(value: object, message: str) -> None:
    from dbtest.errors import ConfigError
    from dbtest.settings import resolve

    with pytest.raises(ConfigError, match="session_options") as err:
        resolve({"session_options": value}, environ={}, pyproject=None)
    assert message in str(err.value)


def test_session_class_that_is_not_a_session() -> None:
    from dbtest._sessions import session_options
    from dbtest.errors import ConfigError
    from dbtest.settings import resolve

    settings = resolve({"session_options": {"class": "dbtest.settings:Settings"}},
                       environ={}, pyproject=None)
    with pytest.raises(ConfigError, match=r"is not a subclass of sqlalchemy\.orm"):
        session_options(settings)


@pytest.mark.usefixtures("on_this_server")
def test_no_unclosed_connection_at_the_end(pytester: pytest.Pytester) -> None:
    """Issue 20's 'ResourceWarning: unclosed connection' at the end of each run: pooled
    asyncpg connections of a loop are closed on that loop before it ends."""
    make_project(pytester, {"asyncio_mode": "auto",
                            "asyncio_default_fixture_loop_scope": "function"})
    pytester.makepyfile(test_many='''
        import pytest
        from sqlalchemy import text

        @pytest.mark.parametrize("i", range(3))
        async def test_function_loops(async_db, i):
            assert await async_db.scalar(text("select 1")) == 1

        @pytest.mark.asyncio(loop_scope="session")
        @pytest.mark.parametrize("i", range(3))
        async def test_session_loop(async_db, i):
            assert await async_db.scalar(text("select 1")) == 1
    ''')
    result = run(pytester, "-W", "error::pytest.PytestUnraisableExceptionWarning")
    assert_on_their_loops(result, 6)


@pytest.mark.usefixtures("on_this_server")
def test_a_trio_test_gets_a_clear_error(pytester: pytest.Pytester) -> None:
    make_project(pytester, {})
    pytester.makepyfile(test_trio='''
        import pytest

        @pytest.mark.trio
        async def test_on_trio(async_db):
            pass
    ''')
    result = run(pytester, "-o", "markers=trio: pytest-trio's marker (not installed here)")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*is marked @pytest.mark.trio, but dbtest's async fixtures "
                                 "use asyncpg, which needs asyncio*"])
