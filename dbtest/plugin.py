"""pytest wiring: options, the ``dbtest`` marker, stash keys and xdist. No fixtures here
(they live in :mod:`dbtest.fixtures`, registered at configure time so that ours win over
other plugins' fixtures of the same name, e.g. Faker's ``faker``)."""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any

import pytest

from dbtest._marker import ENGINE_FIXTURES, MARKER, engine_conflict, marker_options
from dbtest._summary import template_line, template_records
from dbtest.errors import ConfigError
from dbtest.settings import HELP  # imports dbtest.errors too: no extra cost

if TYPE_CHECKING:
    from dbtest._leaks import Tracker
    from dbtest._prestart import Prestart
    from dbtest._workspace import Workspace

__all__ = ["MARKER", "REPORTS_KEY", "SEED_KEY", "WORKSPACE_KEY", "marker_options",
           "workspace_for"]



class _State:
    """What the plugin keeps for one pytest process."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._settings: Any = None
        self.workspace: Workspace | None = None
        #: the server start running in the background while pytest collects
        self.prestart: Prestart | None = None
        self.prestart_mode: str | None = None
        self.kept: list[tuple[str, str]] = []
        self._tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        """Who could have leaked into each worker database (see :mod:`dbtest._leaks`)."""
        if self._tracker is None:
            from dbtest._leaks import Tracker

            self._tracker = Tracker()
        return self._tracker

    @property
    def settings(self) -> Any:
        if self._settings is None:
            from dbtest.settings import resolve

            self._settings = resolve(cli=_cli_values(self.config), root=self.config.rootpath)
        return self._settings


WORKSPACE_KEY = pytest.StashKey[_State]()
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
SEED_KEY = pytest.StashKey[int]()

_OPTIONS = ("backend", "url", "schema", "seeds", "template_seeds", "isolation", "cache_dir",
            "pg_bin", "leaks", "seed", "port", "pool_size", "docker_image", "driver",
            "async_driver", "cache_max_mb", "prestart", "reset_sequences")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dbtest", "database tests against a real PostgreSQL (dbtest)")
    for name in _OPTIONS:
        group.addoption(f"--dbtest-{name.replace('_', '-')}", dest=f"dbtest_{name}",
                        default=None, help=HELP[name])
    group.addoption("--dbtest-keep-failed", action="store_true", default=False,
                    dest="dbtest_keep_failed",
                    help="keep the fresh_db database of a failed test and print its URL")


def _cli_values(config: pytest.Config) -> dict[str, Any]:
    return {name: config.getoption(f"dbtest_{name}") for name in _OPTIONS}


class _MarkerError(ConfigError, pytest.Collector.CollectError):
    """A ``ConfigError`` that pytest shows as a collection error, message alone."""


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """Validate each marked test's ``@pytest.mark.dbtest`` as it is collected: a bad key or
    value is a collection error naming the test and the key."""
    result = yield
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, pytest.Function) and item.get_closest_marker("dbtest"):
            try:
                opts = marker_options(item)
            except ConfigError as exc:
                raise _MarkerError(str(exc)) from None
            try:
                settings = item.config.stash[WORKSPACE_KEY].settings
            except ConfigError:  # reported once, when collection ends
                continue
            problem = engine_conflict(item, opts, settings)
            if problem:
                raise _MarkerError(problem)
    return result


def _settings_or_usage_error(config: pytest.Config) -> Any:
    """The resolved settings; a settings error stops the run with its message alone."""

    try:
        return config.stash[WORKSPACE_KEY].settings
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


#: fixtures that need the settings (every database fixture goes through the workspace)
_SETTINGS_FIXTURES = frozenset({"_dbtest_workspace", "faker"})


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # an xdist controller checks the settings before it starts workers (a worker's error
    # would crash it); its run is a database run anyway
    if _is_xdist_controller(session.config):
        _settings_or_usage_error(session.config)
    else:  # speculatively, if [tool.dbtest] exists (prestart = "auto")
        _start_early(session.config, speculative=True)


def pytest_itemcollected(item: pytest.Item) -> None:
    from dbtest._prestart import needs_server

    if needs_server(item):
        _start_early(item.config, speculative=False)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Settings errors stop the run once, before any test, with the message alone (not
    one traceback per test); runs that use no dbtest fixture never read them. A server
    started in the background that no selected test needs is stopped."""
    state = session.config.stash[WORKSPACE_KEY]
    if state.prestart is not None:
        from dbtest._prestart import driver_of, needs_server, warm_imports

        if not any(needs_server(item) for item in session.items):
            state.prestart.cancel()  # stopped at the end of the run, once it is up
        else:  # what the first test imports, while the server boots
            warm_imports(driver_of(state))
    if hasattr(session.config, "workerinput"):
        return  # the controller checked them
    if any(not _SETTINGS_FIXTURES.isdisjoint(getattr(i, "fixturenames", ()))
           for i in session.items):
        _settings_or_usage_error(session.config)


def _is_xdist_controller(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(
        config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    config.stash[WORKSPACE_KEY] = _State(config)
    if _is_xdist_controller(config) and getattr(config.option, "testrunuid", None) is None:
        # fix the run id now, so this controller knows which shared server to stop
        import uuid

        config.option.testrunuid = uuid.uuid4().hex
        _check_budget(config)
    from dbtest import _asyncio, fixtures

    config.pluginmanager.register(fixtures, "dbtest.fixtures")
    if _asyncio.active(config) or config.pluginmanager.has_plugin("anyio"):
        # async fixtures, one per pytest-asyncio loop scope, and one for anyio tests
        config.pluginmanager.register(_asyncio, "dbtest.asyncio")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Name this controller to each xdist worker as the owner of the run's shared server
    (a worker's parent pid is no proof: once the controller dies, it is init's)."""
    node.workerinput["dbtest_owner"] = os.getpid()


@pytest.hookimpl(specname="pytest_configure", tryfirst=True)
def pytest_configure_asyncio_defaults(config: pytest.Config) -> None:  # pytest_ prefix: a hook
    """Before pytest-asyncio configures itself: no warning for its unset options."""
    from dbtest import _asyncio

    _asyncio.configure(config)


# inside pytest-asyncio's wrapper (trylast), so that it sees the asyncio mark we add
@pytest.hookimpl(specname="pytest_pycollect_makeitem", wrapper=True, trylast=True)
def pytest_pycollect_makeitem_asyncio(collector: pytest.Collector, name: str, obj: object
                                      ) -> Any:
    """Mark ``async def`` tests that use dbtest's async fixtures as asyncio tests."""
    result = yield
    if result and inspect.iscoroutinefunction(obj):
        from dbtest._asyncio import mark_async_items

        mark_async_items(collector.config, obj, result)
    return result


def _check_budget(config: pytest.Config) -> None:
    """xdist on a ``url`` server: fail before the workers start when the server cannot hold
    them (see :func:`dbtest._liveness.check_budget`)."""
    from dbtest.errors import DbtestError

    workers = config.option.numprocesses
    try:
        settings = config.stash[WORKSPACE_KEY].settings
    except DbtestError:
        return  # a bad setting is reported where it is used, as without xdist
    if isinstance(workers, int) and workers > 1 and settings.backend == "url" and settings.url:
        from dbtest._liveness import check_url_budget

        try:
            check_url_budget(settings.url, workers)
        except DbtestError as exc:
            raise pytest.UsageError(f"dbtest: {exc}") from None


def workspace_for(config: pytest.Config) -> Workspace:
    """This process's :class:`Workspace`, created on first use (or handed over by the
    background start, whose error, if any, is raised here)."""
    state = config.stash[WORKSPACE_KEY]
    if state.workspace is None:
        from dbtest._prestart import freeze_heap, warm_imports

        if state.prestart is not None:
            state.workspace = state.prestart.result()  # raises the start's error
            state.prestart = None
        else:
            warm_imports(state.settings.driver)
            state.workspace = _new_workspace(config)
        freeze_heap()  # SQLAlchemy is imported: see dbtest._prestart
    return state.workspace


def _new_workspace(config: pytest.Config) -> Workspace:
    from dbtest._workspace import Workspace, worker_id

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") if hasattr(config, "workerinput") \
        else None
    settings = config.stash[WORKSPACE_KEY].settings
    # xdist workers share one local server, so templates are built once per run
    share = run is not None and settings.backend in ("auto", "local", "embedded") and \
        not settings.url
    workerinput = getattr(config, "workerinput", None)
    return Workspace(settings, worker=worker_id(workerinput),
                     run_id=run[:8] if run else None, shared_run=run if share else None,
                     workers=int((workerinput or {}).get("workercount", 1)),
                     owner_pid=(workerinput or {}).get("dbtest_owner"))


def _start_early(config: pytest.Config, *, speculative: bool) -> None:
    """Start the server in the background while pytest collects (see dbtest._prestart)."""
    from dbtest._prestart import maybe_start

    maybe_start(config.stash[WORKSPACE_KEY], config, lambda: _new_workspace(config),
                controller=_is_xdist_controller(config), speculative=speculative)


_SAVEPOINT_FIXTURES = frozenset({"db_connection", "async_db", "async_db_connection"})


def _engine_checker(item: pytest.Item) -> Any:
    """The leak checker for a test that uses ``db_engine`` / ``async_db_engine`` but no
    savepoint fixture (those check themselves), else ``None``."""
    state = item.config.stash.get(WORKSPACE_KEY, None)
    ws = state.workspace if state is not None else None
    if ws is None or not ws.started:
        return None
    names = getattr(item, "fixturenames", ())
    if ENGINE_FIXTURES.isdisjoint(names):
        return None
    if not _SAVEPOINT_FIXTURES.isdisjoint(names) and (
            marker_options(item).get("isolation") or ws.settings.isolation) == "savepoint":
        return None
    from dbtest._leakcheck import Checker

    assert state is not None
    return Checker(ws, ws.default_key(), item.nodeid, state.tracker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    result = yield
    checker = _engine_checker(item)
    if checker is not None:  # after the fixtures: what was committed before the test
        checker.check_committed(at_setup=True)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    try:
        result = yield
        checker = _engine_checker(item)
        if checker is not None:  # what the test committed through the engine
            checker.check_committed(at_setup=False)
        return result
    finally:
        state = item.config.stash.get(WORKSPACE_KEY, None)
        if state is not None and state._tracker is not None:
            state._tracker.ran(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Any:
    report = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    seed = item.stash.get(SEED_KEY, None)
    if seed is not None and report.failed:
        report.sections.append(("dbtest", f"faker/factory seed {seed}; replay with the same "
                                          f"test id (and --dbtest-seed if one was given)"))
    return report


@pytest.hookimpl(wrapper=True)  # a wrapper: syrupy's own hook would otherwise answer first
def pytest_assertrepr_compare(config: pytest.Config, op: str, left: object,
                              right: object) -> Any:
    others = yield  # every implementation's explanation; pytest shows the first non-empty
    modules = {type(x).__module__ for x in (left, right)}
    ours = None
    if any(m.startswith("dbtest.state") for m in modules):
        from dbtest.state import assertrepr_compare

        ours = assertrepr_compare(op, left, right)
    elif any(m.startswith("dbtest.assertions") for m in modules):
        from dbtest.assertions import assertrepr_compare as changes_compare

        ours = changes_compare(op, left, right)
    return [ours, *others] if ours else others


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(WORKSPACE_KEY, None)
    if state is None:
        return
    lines = []
    if state.workspace is not None and state.workspace.started:
        server = state.workspace.server
        how = server.details.get("detached") or server.backend  # says which server it joined
        lines.append(f"server: {how}, PostgreSQL {server.version}" if "detached" in
                     server.details else f"server: PostgreSQL {server.version} ({how})")
        lines += [template_line(r) for r in template_records(state.workspace)]
    elif _is_xdist_controller(config):
        from dbtest.provision import read_records

        records = read_records(state.settings.cache_dir, config.option.testrunuid)
        lines += [template_line(r) for r in records]
    from dbtest.errors import mask_url  # a CI log is no place for the password

    lines += [f"kept database of failed {nodeid}: {mask_url(url)}"
              for nodeid, url in state.kept]
    if lines:
        terminalreporter.write_sep("-", "dbtest")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(WORKSPACE_KEY, None)
    ws = state.workspace if state is not None else None
    if ws is not None and ws.shared_run is not None and ws.started:
        from dbtest.provision import write_records

        write_records(ws.settings.cache_dir, ws.shared_run, template_records(ws))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(WORKSPACE_KEY, None)
    if state is None:
        return
    if state.prestart is not None:  # started in the background, never handed over
        state.prestart.close()
        state.prestart = None
    if state.workspace is not None:
        state.workspace.close()
        state.workspace = None
    if _is_xdist_controller(config):
        from dbtest.provision import stop_shared

        try:
            settings = state.settings
        except ConfigError:  # reported at the start; no worker ran, no server started
            return
        stop_shared(settings.cache_dir, config.option.testrunuid)
