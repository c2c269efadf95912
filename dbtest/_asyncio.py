"""dbtest and pytest-asyncio: async fixtures on the test's own loop, with zero config.

* **Loops.** asyncpg connections belong to the event loop that opened them. pytest-asyncio
  runs each test on the loop of its *loop scope* (``@pytest.mark.asyncio(loop_scope=...)``,
  else ``asyncio_default_test_loop_scope``, else ``function``) and each async fixture on the
  loop of the fixture's own loop scope (``asyncio_default_fixture_loop_scope``), so a fixture
  with a fixed loop scope breaks every project whose tests use another ("attached to a
  different loop"). dbtest defines its async fixture once per loop scope
  (``_dbtest_async_<scope>``, each declared with that ``loop_scope``) and ``async_db`` picks
  the one of the test's loop scope at setup: whatever the settings, the session is opened,
  used and closed on the test's loop. Only public pytest-asyncio API is used
  (``pytest_asyncio.fixture(loop_scope=...)``, the ``asyncio`` marker, the ini options).
* **Pools.** Each loop scope also has ``_dbtest_async_pools_<scope>`` (cached for that scope,
  on that loop): it closes the pooled asyncpg connections of its loop before pytest-asyncio
  closes the loop, so no run ends with ``ResourceWarning: unclosed connection``.
* **Zero config.** In strict mode (pytest-asyncio's default) an ``async def`` test needs
  ``@pytest.mark.asyncio``; dbtest adds that marker to ``async def`` tests that use
  ``async_db``, ``async_db_connection`` or ``async_db_engine`` (and to no other test). When a
  project has not set ``asyncio_default_fixture_loop_scope``, dbtest silences
  pytest-asyncio's deprecation warning about it during configuration (the behaviour stays
  pytest-asyncio's own default), so ``filterwarnings = ["error"]`` works without asyncio
  settings.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from dbtest._workspace import WorkerDatabase, Workspace

__all__ = ["ASYNC_FIXTURES", "LOOP_SCOPES", "Pools", "active", "configure", "fixture_for",
           "mark_async_items", "test_loop_scope"]

LOOP_SCOPES = ("function", "class", "module", "package", "session")
#: dbtest fixtures whose users are async tests (marked as asyncio tests in strict mode)
ASYNC_FIXTURES = frozenset({"async_db", "async_db_connection", "async_db_engine"})
_UNSET_WARNING = r"The configuration option \"asyncio_default_fixture_loop_scope\" is unset"
#: markers of other async test runners: their tests are left alone
_OTHER_RUNNERS = ("anyio", "trio")


def active(config: pytest.Config) -> bool:
    """Whether pytest-asyncio is installed and its plugin enabled in this run."""
    return bool(config.pluginmanager.has_plugin("asyncio"))


def configure(config: pytest.Config) -> None:
    """Run before pytest-asyncio's ``pytest_configure``: when the project has not set
    ``asyncio_default_fixture_loop_scope``, ignore pytest-asyncio's warning about it (its
    default, the fixture's own scope, stays in force)."""
    if not active(config):
        return
    try:
        value = config.getini("asyncio_default_fixture_loop_scope")
    except ValueError:  # a pytest-asyncio without that option
        return
    if not value:
        # pytest 9 applies the project's filterwarnings (e.g. "error") around the configure
        # hooks; this filter goes in front of them and matches this one message only
        warnings.filterwarnings("ignore", message=_UNSET_WARNING,
                                category=pytest.PytestDeprecationWarning)


def mark_async_items(config: pytest.Config, obj: object, result: Any) -> None:
    """Mark the ``async def`` test items in ``result`` that use dbtest's async fixtures as
    asyncio tests (what ``asyncio_mode = "auto"`` does, for these tests only)."""
    if not result or not inspect.iscoroutinefunction(obj) or not active(config):
        return
    for item in result if isinstance(result, list) else [result]:
        if not isinstance(item, pytest.Function) or not ASYNC_FIXTURES & set(
                item.fixturenames):
            continue
        if any(item.get_closest_marker(m) is not None for m in ("asyncio", *_OTHER_RUNNERS)):
            continue
        if "anyio_backend" in item.fixturenames:  # anyio's plugin runs it
            continue
        item.add_marker(pytest.mark.asyncio)


def test_loop_scope(item: pytest.Item) -> str:
    """The loop scope ``item`` runs on: its ``asyncio`` marker's ``loop_scope``, else
    ``asyncio_default_test_loop_scope``, else ``function`` (pytest-asyncio's rules)."""
    scope: Any = None
    marker = item.get_closest_marker("asyncio")
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if not scope:
        try:
            scope = item.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # pytest-asyncio < 0.26: tests default to the function's loop
            scope = None
    return str(scope or "function")


test_loop_scope.__test__ = False  # type: ignore[attr-defined]  # not a test for pytest


def _runs_on_anyio(item: pytest.Item) -> bool:
    """Whether anyio's plugin runs ``item``: marked ``anyio``, or (unmarked ``asyncio``)
    asking for the ``anyio_backend`` fixture."""
    if item.get_closest_marker("anyio") is not None:
        return True
    return (item.get_closest_marker("asyncio") is None
            and "anyio_backend" in getattr(item, "fixturenames", ()))


def _anyio_fixture(request: pytest.FixtureRequest) -> str:
    """``_dbtest_async_anyio`` when the test's anyio backend is asyncio; else a clear error."""
    from dbtest.errors import ConfigError

    if not request.config.pluginmanager.has_plugin("anyio"):
        raise ConfigError(f"{request.node.nodeid} is an anyio test, but anyio's pytest plugin "
                          f"is not active: do not disable it (-p no:anyio).")
    backend = request.getfixturevalue("anyio_backend")
    name = backend[0] if isinstance(backend, (tuple, list)) else backend
    if name != "asyncio":
        raise ConfigError(f"{request.node.nodeid} runs on anyio's {name!r} backend, but "
                          f"dbtest's async fixtures use asyncpg, which needs asyncio. Make "
                          f"the anyio_backend fixture return 'asyncio' for database tests.")
    return "_dbtest_async_anyio"


def fixture_for(request: pytest.FixtureRequest) -> str:
    """The name of dbtest's async fixture that runs on the loop of ``request``'s test."""
    from dbtest.errors import ConfigError

    item = request.node
    if item.get_closest_marker("anyio") and item.get_closest_marker("asyncio"):
        raise ConfigError(f"{item.nodeid} is marked @pytest.mark.anyio, and pytest-asyncio "
                          f"runs it too (asyncio_mode = \"auto\" marks every async test, or "
                          f"it is also marked asyncio): the two plugins put its fixtures on "
                          f"different event loops. Keep pytest-asyncio's default "
                          f"asyncio_mode = \"strict\" for anyio tests, or drop their anyio "
                          f"marker.")
    if _runs_on_anyio(item):
        return _anyio_fixture(request)
    if not active(request.config):
        raise ConfigError(f"{item.nodeid} uses dbtest's async fixtures, which need "
                          f"pytest-asyncio, but its plugin is not active. Install it "
                          f"(pip install 'dbtest[async]') and do not disable it "
                          f"(-p no:asyncio).")
    if item.get_closest_marker("trio") is not None:
        raise ConfigError(f"{item.nodeid} is marked @pytest.mark.trio, but dbtest's async "
                          f"fixtures use asyncpg, which needs asyncio. Mark the test "
                          f"@pytest.mark.asyncio (or @pytest.mark.anyio with the asyncio "
                          f"backend) instead.")
    scope = test_loop_scope(item)
    if scope not in LOOP_SCOPES:
        raise ConfigError(f"{item.nodeid}: loop scope {scope!r} (from @pytest.mark.asyncio "
                          f"or asyncio_default_test_loop_scope) is not one of "
                          f"{', '.join(LOOP_SCOPES)}. Fix that setting.")
    _check_mixing(request.config, item.nodeid, scope)
    return f"_dbtest_async_{scope}"


#: pytest-asyncio before 1.2 runs a fixture and a test that share a wider loop scope on
#: different loops once a run has used loops of other scopes (pure pytest-asyncio shows it)
_MIXES_LOOPS_CORRECTLY = (1, 2)
_SCOPES_KEY = pytest.StashKey[dict[str, str]]()


@functools.cache  # read once: importlib.metadata scans the installed distributions (~1 ms)
def _pytest_asyncio_version() -> tuple[int, ...]:
    import importlib.metadata

    try:
        text = importlib.metadata.version("pytest-asyncio")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return (0,)
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def _check_mixing(config: pytest.Config, nodeid: str, scope: str) -> None:
    """On pytest-asyncio < 1.2, one loop scope per run: the first test sets it, a test on
    another loop scope gets this clear error instead of asyncpg's wrong-loop failure."""
    from dbtest.errors import ConfigError

    if _pytest_asyncio_version() >= _MIXES_LOOPS_CORRECTLY:
        return
    first = config.stash.setdefault(_SCOPES_KEY, {})
    if not first:
        first[scope] = nodeid
        return
    if scope in first:
        return
    (other, where), = first.items()
    raise ConfigError(
        f"{nodeid} runs on the {scope!r} event loop, but {where} ran on the {other!r} loop: "
        f"pytest-asyncio {'.'.join(map(str, _pytest_asyncio_version()))} puts fixtures and "
        f"tests on different loops when one run mixes loop scopes (fixed in pytest-asyncio "
        f"1.2). Upgrade pytest-asyncio to 1.2 or later, or run every async database test on "
        f"one loop: set asyncio_default_test_loop_scope (and drop loop_scope= from "
        f"@pytest.mark.asyncio).")


class Pools:
    """The worker databases whose pooled async engine was used on one loop."""

    def __init__(self) -> None:
        self.used: dict[int, WorkerDatabase] = {}

    def track(self, worker: WorkerDatabase) -> None:
        self.used[id(worker)] = worker

    async def close(self) -> None:
        for worker in self.used.values():
            await worker.async_engine().dispose()  # this loop's pool: close its connections
        self.used.clear()


def _define(scope: str, fixture: Any) -> None:
    """Define this loop scope's two fixtures (``fixture`` is ``pytest_asyncio.fixture``)."""
    pools_name = f"_dbtest_async_pools_{scope}"

    async def pools() -> AsyncIterator[Pools]:
        found = Pools()
        try:
            yield found
        finally:
            await found.close()

    async def pair(request: pytest.FixtureRequest, _dbtest_workspace: Workspace,
                   **pools: Pools) -> AsyncIterator[tuple[AsyncConnection, AsyncSession]]:
        from dbtest.fixtures import async_pair

        steps = async_pair(request, _dbtest_workspace, pools[pools_name])
        value = await steps.__anext__()
        try:
            yield value
        finally:
            with contextlib.suppress(StopAsyncIteration):
                await steps.__anext__()

    # pytest reads a fixture's dependencies from its signature: name this scope's pools
    # fixture there, so that pytest tears ``pair`` down before it
    params = list(inspect.signature(pair).parameters.values())[:2]
    pair.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*params, inspect.Parameter(pools_name, inspect.Parameter.KEYWORD_ONLY)])
    globals()[pools_name] = fixture(scope=scope, loop_scope=scope, name=pools_name)(pools)
    globals()[f"_dbtest_async_{scope}"] = fixture(loop_scope=scope,
                                                  name=f"_dbtest_async_{scope}")(pair)


async def _anyio_pair(request: pytest.FixtureRequest, _dbtest_workspace: Workspace,
                      anyio_backend: Any,
                      ) -> AsyncIterator[tuple[AsyncConnection, AsyncSession]]:
    """``async_db``'s pair for an anyio test, run by anyio's plugin on the test's runner."""
    from dbtest.fixtures import async_pair

    pools = Pools()  # anyio may close this loop after the test: close its pool now
    steps = async_pair(request, _dbtest_workspace, pools)
    value = await steps.__anext__()
    try:
        yield value
    finally:
        try:
            with contextlib.suppress(StopAsyncIteration):
                await steps.__anext__()
        finally:
            await pools.close()


_dbtest_async_anyio = pytest.fixture(name="_dbtest_async_anyio")(_anyio_pair)


def _define_all() -> None:
    try:  # without pytest-asyncio there are no async fixtures (``fixture_for`` says why)
        import pytest_asyncio
    except ImportError:  # pragma: no cover
        return
    for scope in LOOP_SCOPES:
        _define(scope, pytest_asyncio.fixture)


_define_all()
