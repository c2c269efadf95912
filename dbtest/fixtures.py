"""The pytest fixtures. Thin: the work happens in :mod:`dbtest._workspace` and friends.

Internal fixtures start with ``_dbtest``. Heavy imports (SQLAlchemy, psycopg) happen
inside the fixtures, so a run that uses none of them pays nothing.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from dbtest._isolation import SAVEPOINT_MODE, TestTransaction
from dbtest.plugin import MARKER, WORKSPACE_KEY, marker_options, workspace_for

if TYPE_CHECKING:
    from faker import Faker
    from sqlalchemy import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from dbtest._asyncio import Pools
    from dbtest._leakcheck import Checker
    from dbtest._templates import TemplateKey
    from dbtest._workspace import FreshDatabase, Workspace
    from dbtest.provision import PostgresServer

#: the savepoint transaction of the running test (``db_connection`` -> ``db``)
_TX_KEY = pytest.StashKey[TestTransaction]()

__all__ = ["_session_faker", "async_db", "async_db_connection", "async_db_engine", "db",
           "db_connection", "db_engine", "dbtest_server", "faker", "fresh_db", "isolation_mode"]


@pytest.fixture(scope="session")
def _dbtest_workspace(request: pytest.FixtureRequest) -> Workspace:
    return workspace_for(request.config)


@pytest.fixture(scope="session", autouse=True)
def _dbtest_plugged_app(request: pytest.FixtureRequest) -> None:
    """Points the engines given to ``dbtest.plug_app()`` at the test database before any
    fixture of the run uses them (nothing to do, and nothing imported, without it)."""
    import sys

    integration = sys.modules.get("dbtest._integration")
    if integration is not None:
        integration.start_run(request)


@pytest.fixture(scope="session")
def dbtest_server(_dbtest_workspace: Workspace) -> PostgresServer:
    """The throwaway PostgreSQL server of this test run (started on first use).

    Has ``.url`` (SQLAlchemy, psycopg), ``.async_url`` (asyncpg), ``.dsn`` (libpq),
    ``.version``, ``.backend``, ``.create_database()`` and ``.drop_database()``.
    """
    return _dbtest_workspace.server


def _template_key(request: pytest.FixtureRequest, workspace: Workspace) -> TemplateKey:
    """The template a test runs on, from its marker (a function, not a fixture: one less
    fixture per test)."""
    opts = marker_options(request.node)
    return workspace.key_for(opts.get("schema"), tuple(opts.get("seeds") or ()))


def isolation_mode(request: pytest.FixtureRequest, workspace: Workspace | None) -> str:
    """``"savepoint"`` or ``"fresh"``: the test's marker, else the ``isolation`` setting."""
    default = workspace.settings.isolation if workspace is not None else "savepoint"
    return str(marker_options(request.node).get("isolation") or default)


@pytest.fixture(scope="session")
def db_engine(_dbtest_workspace: Workspace) -> Engine:
    """A SQLAlchemy ``Engine`` on this worker's database, cloned from the template.

    Connections from it see committed data only; use ``db`` for isolated tests. A test
    using it is checked for leaks like ``db`` tests. Session-scoped, it serves the
    configured template: a test whose marker names another ``schema`` or ``seeds`` cannot
    use it (a collection error says so).
    """
    return _dbtest_workspace.worker_database(_dbtest_workspace.default_key()).engine


@pytest.fixture(scope="session")
def async_db_engine(_dbtest_workspace: Workspace) -> AsyncEngine:
    """An ``AsyncEngine`` (asyncpg) on this worker's database.

    It opens a new connection each time (no pool): asyncpg connections belong to the
    event loop that opened them, and tests may run on different loops. Like ``db_engine``,
    it serves the configured template only.
    """
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from dbtest.errors import require_extra

    require_extra("asyncpg", "async", "the async_db_engine fixture")
    worker = _dbtest_workspace.worker_database(_dbtest_workspace.default_key())
    return create_async_engine(worker.async_url, poolclass=NullPool)


@pytest.fixture
def _dbtest_fresh(request: pytest.FixtureRequest, _dbtest_workspace: Workspace,
                  ) -> Iterator[FreshDatabase]:
    _dbtest_key = _template_key(request, _dbtest_workspace)
    fresh = _dbtest_workspace.fresh_database(_dbtest_key)
    yield fresh
    fresh.dispose()
    if request.config.getoption("dbtest_keep_failed") and _failed(request):
        request.config.stash[WORKSPACE_KEY].kept.append((request.node.nodeid, fresh.url))
        return
    open_sessions = _open_sessions(_dbtest_workspace, fresh.name)
    if open_sessions:
        warnings.warn(f"{request.node.nodeid} left {len(open_sessions)} connection(s) open to "
                      f"{fresh.name} ({'; '.join(open_sessions)}); dbtest terminated them. "
                      f"Close or dispose your engines/connections in the test.",
                      pytest.PytestWarning, stacklevel=1)
    _dbtest_workspace.release_fresh(_dbtest_key, fresh)


def _open_sessions(workspace: Workspace, name: str) -> list[str]:
    import time

    from dbtest._databases import open_sessions

    with workspace.admin() as admin:  # the run's own: no connection made per test
        deadline = time.monotonic() + 1.0
        sessions = open_sessions(admin, name)
        while sessions and time.monotonic() < deadline:
            time.sleep(0.001)  # closed clients' backends take a moment to exit
            sessions = open_sessions(admin, name)
    return sessions


def _failed(request: pytest.FixtureRequest) -> bool:
    from dbtest.plugin import REPORTS_KEY

    reports = request.node.stash.get(REPORTS_KEY, {})
    return any(r.failed for r in reports.values())


@pytest.fixture
def fresh_db(_dbtest_fresh: FreshDatabase) -> FreshDatabase:
    """A database of this test's own, cloned from the template, dropped afterwards.

    For code that opens its own connections, commits for real or runs concurrent
    transactions. Has ``.name``, ``.url``, ``.async_url``, ``.dsn`` and ``.engine``.
    ``--dbtest-keep-failed`` keeps it when the test fails and prints its URL.
    """
    return _dbtest_fresh


@pytest.fixture
def db_connection(request: pytest.FixtureRequest, _dbtest_workspace: Workspace
                  ) -> Iterator[Connection]:
    """The SQLAlchemy ``Connection`` inside this test's outer transaction.

    Everything done through it (and through ``db``, which shares it) is rolled back
    after the test. With ``@pytest.mark.dbtest(isolation="fresh")`` it is a plain
    connection to a fresh database instead.
    """
    if isolation_mode(request, _dbtest_workspace) == "fresh":
        fresh: FreshDatabase = request.getfixturevalue("_dbtest_fresh")
        with fresh.engine.connect() as conn:
            yield conn
        return
    tx = TestTransaction(_checker(request, _dbtest_workspace))
    conn = tx.open()  # checks what earlier tests may have committed
    request.node.stash[_TX_KEY] = tx  # ``db`` hands its session over (closed after rollback)
    try:
        yield conn
    finally:
        tx.close(conn)  # checks what this test committed, rolls back, closes ``db``'s session


def _checker(request: pytest.FixtureRequest, workspace: Workspace) -> Checker:
    """This test's leak checks on its worker database (see :mod:`dbtest._leakcheck`)."""
    from dbtest._leakcheck import Checker

    return Checker(workspace, _template_key(request, workspace), request.node.nodeid,
                   request.config.stash[WORKSPACE_KEY].tracker)


@pytest.fixture
def db(request: pytest.FixtureRequest, db_connection: Connection) -> Iterator[Session]:
    """A SQLAlchemy ``Session`` whose changes are all rolled back after the test.

    The code under test may call ``commit()``, ``rollback()`` and ``begin_nested()``:
    they act on a savepoint inside the test's outer transaction.
    """
    from dbtest._sessions import session_options

    state = request.config.stash[WORKSPACE_KEY]
    fresh = isolation_mode(request, state.workspace) == "fresh"
    options = session_options(state.settings)
    # on a fresh database the session owns its transactions: commit() commits for real
    session = options.make(db_connection) if fresh else options.make(
        db_connection, join_transaction_mode=SAVEPOINT_MODE)
    tx = None if fresh else request.node.stash.get(_TX_KEY, None)
    if tx is not None:  # closed by db_connection's teardown, after the rollback
        tx.session = session
    _bind_factories(request, session)
    try:
        yield session
    finally:
        if tx is None:  # a fresh database, or a db_connection overridden by the project
            session.close()


def _bind_factories(request: pytest.FixtureRequest, session: Any) -> None:
    """Bind factory-boy factories without a session of their own to this test's session,
    seeded from the test id so their rows do not depend on test order or xdist."""
    from dbtest import factories
    from dbtest.plugin import SEED_KEY

    seed = test_seed(request)
    request.node.stash[SEED_KEY] = seed  # printed when the test fails
    request.addfinalizer(factories.bind_session(session, seed=seed))


@pytest.fixture
def faker(request: pytest.FixtureRequest) -> Faker:
    """A ``Faker`` seeded from this test's id (and ``--dbtest-seed``): the same test gets
    the same values on every run and machine. Wins over Faker's own ``faker`` fixture,
    which is seeded the same for every test. Needs ``dbtest[factories]`` (Faker)."""
    from dbtest.errors import require_extra
    from dbtest.plugin import SEED_KEY

    fake: Faker = require_extra("faker", "factories", "the faker fixture").Faker()
    seed = test_seed(request)
    request.node.stash[SEED_KEY] = seed
    fake.seed_instance(seed)
    if "factory" in sys.modules:  # factories and dbtest fakes exist only once it is imported
        from dbtest.factories import seed_factories

        seed_factories(seed)
    return fake


class _LazyFaker:
    """A ``Faker`` built on first use (see :func:`_session_faker`)."""

    def __init__(self, locale: Any) -> None:
        self._locale = locale
        self._faker: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._faker is None:
            from faker import Faker

            self._faker = Faker(locale=self._locale)
        return getattr(self._faker, name)


@pytest.fixture(scope="session")
def _session_faker(request: pytest.FixtureRequest) -> Any:
    """Replaces the autouse fixture of Faker's own pytest plugin (Faker is a dependency of
    dbtest, so its plugin is installed too): that one builds a ``Faker`` (~0.1 s) in every
    pytest run, even one that never uses it. This one builds it on first use."""
    locale = (request.getfixturevalue("faker_session_locale")
              if "faker_session_locale" in request.fixturenames else ["en_US"])
    return _LazyFaker(locale)


def test_seed(request: pytest.FixtureRequest) -> int:
    """The random seed of this test: ``--dbtest-seed`` mixed with the test id."""
    base = request.config.stash[WORKSPACE_KEY].settings.seed or 0
    digest = hashlib.sha256(f"{base}:{request.node.nodeid}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


test_seed.__test__ = False  # type: ignore[attr-defined]  # not a test for pytest

# The async fixtures: dbtest._asyncio runs them on the test's own loop.

async def async_pair(request: pytest.FixtureRequest, _dbtest_workspace: Workspace,
                     pools: Pools,
                     ) -> AsyncIterator[tuple[AsyncConnection, AsyncSession]]:
    """The ``(AsyncConnection, AsyncSession)`` of one async test (what ``async_db`` and
    ``async_db_connection`` return); :mod:`dbtest._asyncio` runs it as a fixture on the
    test's own event loop."""
    # One async fixture gives both the connection and the session: each async fixture
    # costs a trip through pytest-asyncio's runner, which dominated async_db's overhead.
    from dbtest._sessions import session_options

    options = session_options(_dbtest_workspace.settings, asynchronous=True)
    if isolation_mode(request, _dbtest_workspace) == "fresh":
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        fresh: FreshDatabase = request.getfixturevalue("_dbtest_fresh")
        engine = create_async_engine(fresh.async_url, poolclass=NullPool)
        async with engine.connect() as conn:
            session = options.make(conn)  # commits for real on a fresh database
            _bind_factories(request, session)
            try:
                yield conn, session
            finally:
                await session.close()
        await engine.dispose()
        return
    tx = TestTransaction(_checker(request, _dbtest_workspace))
    conn = await tx.aopen()  # what earlier tests may have committed
    assert tx.worker is not None
    pools.track(tx.worker)  # its pool on this loop is closed before the loop ends
    session = options.make(conn, join_transaction_mode=SAVEPOINT_MODE)
    _bind_factories(request, session)
    try:
        yield conn, session
    finally:
        await tx.aclose(conn, session)  # session closed, what this test committed, rollback


def _pair_of(request: pytest.FixtureRequest) -> tuple[AsyncConnection, AsyncSession]:
    from dbtest._asyncio import fixture_for

    return request.getfixturevalue(fixture_for(request))  # type: ignore[no-any-return]

@pytest.fixture
def async_db_connection(request: pytest.FixtureRequest) -> AsyncConnection:
    """The ``AsyncConnection`` (asyncpg) inside this test's outer transaction,
    rolled back after the test; the async twin of ``db_connection`` (``async_db``
    shares it). Opened on the event loop the test runs on."""
    return _pair_of(request)[0]

@pytest.fixture
def async_db(request: pytest.FixtureRequest) -> AsyncSession:
    """An ``AsyncSession`` whose changes are all rolled back after the test; the code
    under test may ``await session.commit()`` and use ``session.begin_nested()``.
    Opened on the event loop the test runs on; ``expire_on_commit=False`` unless the
    ``session_options`` setting says otherwise."""
    return _pair_of(request)[1]


_ = (MARKER,)  # re-exported for the plugin's help text
