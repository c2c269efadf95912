"""Plug dbtest into an app that owns its engine and sessions.

One call in ``conftest.py`` makes an autouse fixture::

    from dbtest import plug_app

    dbtest_app = plug_app("myapp.db:engine", "myapp.db:SessionLocal", "myapp.db:Session")

For the run, each **engine** (``Engine`` or ``AsyncEngine``, given as an object or an
import path) connects to this process's test database instead of the one in its URL:
dbtest rewrites the connect arguments of every new connection (SQLAlchemy's
``do_connect`` event), so every reference to the engine object follows, wherever the app
keeps one. In a test marked ``isolation="fresh"`` (or using ``fresh_db``) it connects to
that test's fresh database instead. Each **sessionmaker** and **scoped_session** is bound
to the test's ``db`` connection for the test (``join_transaction_mode="create_savepoint"``:
the app may commit; all is rolled back), and a ``scoped_session``'s registry holds ``db``
itself, so ``Session()`` in the app's code, and factories naming it, use the test's session.
``db`` takes the app's ``expire_on_commit`` and ``autoflush``. The async twins work the same
way in ``async def`` tests: each **async_sessionmaker** is bound to the test's
``async_db_connection`` and an **async_scoped_session**'s registry holds ``async_db``, so the
app's async sessions join the test's transaction on the test's event loop, in every task
(the app's request handlers run in tasks of their own) (a sync test leaves
them alone: they could not run on its loop; the app's engines still follow the test
database there, and the leak check reports what they commit). ``execution_options`` (e.g.
``schema_translate_map``) apply to the test's connection and to the app's engines'
connections; ``connect_args`` are added to the app engines' connect arguments.

A FastAPI app that opens its sessions in a dependency (``def get_db(): with
Session(engine) as session: yield session``) gets it overridden for each test::

    dbtest_app = plug_app("myapp.db:engine", app="myapp.main:app",
                          session_dependency="myapp.deps:get_db")

so the app's routes use the test's ``db`` (savepoint or fresh alike), and the test sees
what the request wrote; the override is removed after the test (the app's own overrides
are put back).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from dbtest._appengine import AppEngine, AppOverrides
from dbtest._build import import_object
from dbtest.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from dbtest._workspace import Workspace

__all__ = ["AppEngine", "database_url", "plug_app", "session_options", "start_run"]

#: a target naming a fixture of the app's tests (its engine or session factory) this way is
#: taken from each test that uses that fixture
FIXTURE = "fixture:"

def session_options(factory: Any) -> dict[str, Any]:
    """The session options of an app's ``sessionmaker`` (or a ``scoped_session``'s
    factory) that a test session should share: ``expire_on_commit`` and ``autoflush``."""
    kw = getattr(getattr(factory, "session_factory", factory), "kw", {})
    return {k: kw[k] for k in ("expire_on_commit", "autoflush") if k in kw}


@dataclass
class _Targets:
    engines: list[AppEngine]
    makers: list[Any]  # sessionmaker
    scoped: list[Any]  # scoped_session
    async_makers: list[Any] = field(default_factory=list)  # async_sessionmaker
    async_scoped: list[Any] = field(default_factory=list)  # async_scoped_session

    def __bool__(self) -> bool:
        return any((self.engines, self.makers, self.scoped, self.async_makers,
                    self.async_scoped))


def _classify(targets: tuple[Any, ...] | list[Any], connect_args: dict[str, Any],
              execution_options: dict[str, Any], labels: list[str] | None = None,
              ) -> _Targets:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, async_scoped_session, async_sessionmaker
    from sqlalchemy.orm import scoped_session, sessionmaker

    found = _Targets([], [], [])
    for i, target in enumerate(targets):
        if labels is not None:  # objects a fixture returned
            name, obj = labels[i], target
        else:
            name = target if isinstance(target, str) else repr(target)
            obj = import_object(target, what="plug_app()") if isinstance(target, str) else target
        if isinstance(obj, AsyncEngine):
            obj = obj.sync_engine
        if isinstance(obj, Engine):
            found.engines.append(AppEngine(obj, dict(connect_args), dict(execution_options)))
        elif isinstance(obj, sessionmaker):
            found.makers.append(obj)
        elif isinstance(obj, scoped_session):
            found.scoped.append(obj)
        elif isinstance(obj, async_sessionmaker):
            found.async_makers.append(obj)
        elif isinstance(obj, async_scoped_session):
            found.async_scoped.append(obj)
        else:
            raise ConfigError(
                f"plug_app(): {name} is a {type(obj).__module__}.{type(obj).__qualname__}, "
                f"not an Engine, AsyncEngine, sessionmaker, scoped_session, "
                f"async_sessionmaker or async_scoped_session. Pass the app's engine or "
                f"session factory itself (e.g. 'myapp.db:SessionLocal', not a function "
                f"returning one or a Session instance).")
    return found


class _Plug:
    """One ``plug_app()`` call: its targets, options, and what they resolved to."""

    def __init__(self, targets: tuple[Any, ...], execution_options: dict[str, Any],
                 connect_args: dict[str, Any], app: Any = None,
                 dependencies: list[Any] | None = None) -> None:
        self.fixtures = [t.removeprefix(FIXTURE) for t in targets
                         if isinstance(t, str) and t.startswith(FIXTURE)]
        self.targets = tuple(t for t in targets if not (isinstance(t, str)
                                                        and t.startswith(FIXTURE)))
        self.execution_options = execution_options
        self.connect_args = connect_args
        self.found: _Targets | None = None
        self.app, self.dependencies = app, dependencies or []
        self.overrides: AppOverrides | None = None
        self.fixture_engines: dict[int, AppEngine] = {}  # id(engine) ->

    def start(self, workspace: Workspace) -> _Targets:
        """Resolve the targets and point the engines at the worker database (once)."""
        if self.found is None:
            settings = workspace.settings
            self.found = _classify(self.targets,
                                   {**settings.connect_args, **self.connect_args},
                                   self.options(workspace))
            if self.app is not None:
                self.overrides = AppOverrides.resolve(self.app, self.dependencies)
            worker = workspace.worker_database(workspace.default_key())
            for app_engine in self.found.engines:
                app_engine.point_at(worker.url)
                workspace.on_close.append(app_engine.restore)
                # a reset drops the database under the engine's pooled connections
                workspace.on_reset.append(app_engine.engine.dispose)
            workspace.on_close.append(self.stop)
        return self.found

    def for_test(self, request: pytest.FixtureRequest, workspace: Workspace) -> _Targets:
        """The targets of this test: the import-path ones, and the ``fixture:`` ones this
        test uses (an app fixture's engine follows the test database from then on)."""
        found = self.start(workspace)
        names = [n for n in self.fixtures if n in request.fixturenames]
        if not names:
            return found
        extra = _classify([request.getfixturevalue(n) for n in names],
                          {**workspace.settings.connect_args, **self.connect_args},
                          self.options(workspace), labels=[f"fixture {n!r}" for n in names])
        engines = []
        for app_engine in extra.engines:
            known = self.fixture_engines.get(id(app_engine.engine))
            if known is None:
                known = self.fixture_engines[id(app_engine.engine)] = app_engine
                worker = workspace.worker_database(workspace.default_key())
                app_engine.point_at(worker.url)
                workspace.on_close.append(app_engine.restore)
                workspace.on_reset.append(app_engine.engine.dispose)
            engines.append(known)
        return _Targets([*found.engines, *engines], [*found.makers, *extra.makers],
                        [*found.scoped, *extra.scoped],
                        [*found.async_makers, *extra.async_makers],
                        [*found.async_scoped, *extra.async_scoped])

    def stop(self) -> None:
        self.found, self.overrides = None, None
        self.fixture_engines.clear()

    def options(self, workspace: Workspace) -> dict[str, Any]:
        return {**workspace.settings.execution_options, **self.execution_options}


#: every plug_app() of this process; their engines are pointed at the test database when the
#: run's first database fixture starts (before module- or session-scoped fixtures use them)
_PLUGS: list[_Plug] = []


def start_run(request: pytest.FixtureRequest) -> None:
    """Point the engines of every ``plug_app()`` at this process's test database."""
    if _PLUGS:
        workspace: Workspace = request.getfixturevalue("_dbtest_workspace")
        for plug in _PLUGS:
            plug.start(workspace)


def database_url(config: pytest.Config, driver: str | None = None) -> str:
    """The URL of this process's test database (the worker database of the configured
    schema), starting the server and building the template if needed.

    For an app that connects while it is imported (a ``create_all`` at import, say): set
    the app's own URL setting from it in ``pytest_sessionstart``, before the test modules
    import the app. ``driver`` defaults to the ``driver`` setting.
    """
    from dbtest.plugin import workspace_for

    workspace = workspace_for(config)
    worker = workspace.worker_database(workspace.default_key())
    if driver is None:
        return worker.url
    return workspace.server.url_for(worker.name, driver)


def plug_app(*targets: Any, execution_options: dict[str, Any] | None = None,
             connect_args: dict[str, Any] | None = None, autouse: bool = True,
             app: Any = None, session_dependency: Any = None,
             ) -> Callable[..., Iterator[Any]]:
    """An autouse fixture pointing the app's engines and session factories at the test
    database (see the module docstring). Assign it to a name in ``conftest.py``.

    ``targets`` are ``Engine``, ``AsyncEngine``, ``sessionmaker``, ``scoped_session``,
    ``async_sessionmaker`` or ``async_scoped_session`` objects, import paths to them
    (``"module:attr"``), resolved when the run first needs a database, or
    ``"fixture:<name>"`` for one the app's own test fixture returns (bound in the tests
    that use that fixture; an engine made by a fixture follows the test database from the
    first test using it on, so build it on dbtest's database where a wider-scoped fixture
    uses it first). ``execution_options``
    and ``connect_args`` add to the ``execution_options`` / ``connect_args`` settings. The
    engines follow the test database for the whole run, from before the first session- or
    module-scoped fixture; the fixture yields ``db`` when the app has sync session
    factories, else ``async_db`` in an ``async def`` test when it has async ones, and
    ``None`` where the app's factories need no test session: a fresh test whose factories
    open their own connections to the fresh database, or a test where nothing of the app's
    is plugged (every target a ``fixture:`` one that it does not use: no database is set up).

    ``app`` (a FastAPI app or its import path) and ``session_dependency`` (the app's sync
    dependency function yielding a session, its import path, or a list of them) go
    together: each test overrides the dependency to give its ``db``.
    """
    dependencies = ([] if session_dependency is None else list(session_dependency)
                    if isinstance(session_dependency, (list, tuple)) else [session_dependency])
    if (app is None) != (not dependencies):
        raise ConfigError(
            "plug_app(): app= and session_dependency= go together: the FastAPI app and the "
            "dependency its routes use for a session, e.g. plug_app('myapp.db:engine', "
            "app='myapp.main:app', session_dependency='myapp.deps:get_db').")
    plug = _Plug(targets, dict(execution_options or {}), dict(connect_args or {}), app,
                 dependencies)
    _PLUGS.append(plug)

    @pytest.fixture(autouse=autouse)
    def _fixture(request: pytest.FixtureRequest) -> Iterator[Any]:
        from dbtest.fixtures import isolation_mode

        workspace: Workspace = request.getfixturevalue("_dbtest_workspace")
        found = plug.for_test(request, workspace)
        if not found and plug.overrides is None:
            # nothing of the app's in this test (e.g. a unit test, when every target is a
            # fixture it does not use): no database, fresh or not, is set up for it
            yield None
            return
        options = plug.options(workspace)
        fresh = isolation_mode(request, workspace) == "fresh"
        if fresh:
            fresh_url = request.getfixturevalue("_dbtest_fresh").url
            for app_engine in found.engines:
                app_engine.point_at(fresh_url)
        sessions = _Sessions()
        # In a fresh test the app's factories open their own connections to the fresh
        # database: a test session is set up only for what must hold one (a scoped
        # session's registry, a FastAPI dependency override), not for nothing.
        if found.scoped or plug.overrides is not None or (found.makers and not fresh):
            sessions.db = request.getfixturevalue("db")
            conn = request.getfixturevalue("db_connection")
            if options:
                conn.execution_options(**options)
            _share_options(sessions.db, [*found.scoped, *found.makers])
        # the async session lives on the test's loop: only an async test can use it
        async_test = bool(found.async_makers or found.async_scoped) and \
            inspect.iscoroutinefunction(getattr(request.node, "obj", None))
        if async_test and (found.async_scoped or not fresh):
            sessions.async_db = request.getfixturevalue("async_db")
            aconn = request.getfixturevalue("async_db_connection")
            if options:
                aconn.sync_connection.execution_options(**options)
            _share_options(sessions.async_db.sync_session,
                           [*found.async_scoped, *found.async_makers])
        if fresh:
            fresh_db = request.getfixturevalue("_dbtest_fresh")
            sessions.fresh_engine = fresh_db.engine
            if async_test:
                sessions.fresh_async_url = fresh_db.async_url
        previous = None if plug.overrides is None else plug.overrides.apply(sessions.db)
        try:
            with _bound(found, sessions):
                yield sessions.db if sessions.db is not None else sessions.async_db
        finally:
            if plug.overrides is not None and previous is not None:
                plug.overrides.undo(previous)
            if fresh:  # back to the worker database before the fresh one is dropped
                worker = workspace.worker_database(workspace.default_key())
                for app_engine in found.engines:
                    app_engine.point_at(worker.url)

    return _fixture


def _share_options(db: Session, factories: list[Any]) -> None:
    """Give ``db`` the app's session options (the first factory's win)."""
    for factory in reversed(factories):
        for key, value in session_options(factory).items():
            setattr(db, key, value)


@dataclass
class _Sessions:
    """The test's sessions the app's factories are bound to, and where a fresh test's are."""

    db: Session | None = None
    async_db: AsyncSession | None = None
    fresh_engine: Engine | None = None
    fresh_async_url: str | None = None


def _engine_of(bind: Any) -> Any:
    """The sync ``Engine`` behind a factory's bind (engine, connection, async or not)."""
    return getattr(getattr(bind, "sync_engine", bind), "engine", None)


class _bound:
    """Bind the app's session factories to the test's sessions and restore them after.

    In a savepoint test, sessions from the app's factories join the test's transaction on
    ``db``'s (or ``async_db``'s) connection. In a fresh test they commit for real: a factory
    bound to one of the app's engines keeps it (it points at the fresh database now), others
    get an engine on the fresh database.
    """

    def __init__(self, found: _Targets, sessions: _Sessions) -> None:
        self.found, self.sessions = found, sessions
        self.saved: list[tuple[Any, dict[str, Any]]] = []
        self.previous: list[tuple[Any, Any]] = []
        self.registries: list[tuple[Any, Any]] = []

    def __enter__(self) -> None:
        from sqlalchemy.util import ScopedRegistry

        found, sessions = self.found, self.sessions
        if sessions.db is not None or sessions.fresh_engine is not None:
            self._bind([*found.makers, *(s.session_factory for s in found.scoped)],
                       None if sessions.db is None else sessions.db.get_bind(),
                       sessions.fresh_engine)
        if sessions.db is not None:
            self._hold(found.scoped, sessions.db)
        if sessions.async_db is not None or sessions.fresh_async_url is not None:
            fresh: Any = None
            if sessions.fresh_async_url is not None:
                from sqlalchemy.ext.asyncio import create_async_engine
                from sqlalchemy.pool import NullPool

                # no pool: nothing of it outlives the test's loop
                fresh = create_async_engine(sessions.fresh_async_url, poolclass=NullPool)
            self._bind([*found.async_makers, *(s.session_factory for s in found.async_scoped)],
                       None if sessions.async_db is None else sessions.async_db.bind, fresh)
            for scoped in found.async_scoped:
                # its scope is usually the current task: the test's task does not exist yet
                # (this fixture runs outside the loop), and the app's request handlers run
                # in tasks of their own; so every scope gets the test's session meanwhile
                self.registries.append((scoped, scoped.registry))
                scoped.registry = ScopedRegistry(scoped.registry.createfunc, lambda: None)
                scoped.registry.set(sessions.async_db)

    def _bind(self, makers: list[Any], connection: Any, fresh_engine: Any) -> None:
        engines = {id(e.engine) for e in self.found.engines}
        for maker in makers:
            if fresh_engine is not None and id(_engine_of(maker.kw.get("bind"))) in engines:
                continue
            self.saved.append((maker, dict(maker.kw)))
            if fresh_engine is not None:
                maker.configure(bind=fresh_engine)
            else:
                maker.configure(bind=connection, join_transaction_mode="create_savepoint")

    def _hold(self, scoped_sessions: list[Any], session: Any) -> None:
        for scoped in scoped_sessions:
            try:
                has = scoped.registry.has()
            except Exception:
                # its scope needs a context this test has not entered (Flask-SQLAlchemy's
                # app context): the app cannot reach it here; a session it opens later
                # under another scope commits for real, which the leak check reports
                continue
            self.previous.append((scoped, scoped.registry() if has else None))
            scoped.registry.set(session)

    def __exit__(self, *exc: object) -> None:
        for scoped, previous in reversed(self.previous):
            scoped.registry.clear()
            if previous is not None:
                scoped.registry.set(previous)
        self.previous.clear()
        for scoped, registry in reversed(self.registries):
            scoped.registry = registry
        self.registries.clear()
        for maker, kw in reversed(self.saved):
            maker.kw.clear()
            maker.kw.update(kw)
        self.saved.clear()
