"""An app's engine pointed at a test database (``plug_app``'s engines): every new
connection goes to the test database, whichever module holds the engine object; and a
FastAPI app's session dependencies overridden to give the test's session
(``plug_app(app=..., session_dependency=...)``)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtest._build import import_object
from dbtest.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["AppEngine", "AppOverrides"]

#: connect arguments that say where and as whom to connect: replaced by the test database's
_LOCATION = ("host", "hostaddr", "port", "dbname", "database", "user", "password", "service",
             "sslmode", "dsn")


@dataclass
class AppEngine:
    """An app's engine pointed at a test database until :meth:`restore`."""

    engine: Engine  # the sync engine (an AsyncEngine's ``sync_engine``)
    connect_args: dict[str, Any] = field(default_factory=dict)
    execution_options: dict[str, Any] = field(default_factory=dict)
    _target: dict[str, Any] | None = None
    _original_url: Any = None
    _listening: bool = False

    def point_at(self, url: str) -> None:
        """Make every new connection of the engine go to ``url``'s database (with the
        engine's own driver); close its pooled connections to the previous one."""
        from sqlalchemy import event
        from sqlalchemy.engine import make_url

        target = make_url(url).set(drivername=self.engine.url.drivername)
        _, cparams = self.engine.dialect.create_connect_args(target)
        self._target = {**cparams, **self.connect_args}
        if self._original_url is None:
            self._original_url = self.engine.url
        if not self._listening:
            event.listen(self.engine, "do_connect", self._do_connect)
            if self.execution_options:
                event.listen(self.engine, "engine_connect", self._set_options)
            self._listening = True
        self.engine.url = target
        self.engine.dispose()

    def _do_connect(self, dialect: Any, record: Any, cargs: list[Any],
                    cparams: dict[str, Any]) -> None:
        assert self._target is not None
        for key in _LOCATION:
            cparams.pop(key, None)
        cparams.update(self._target)

    def _set_options(self, connection: Connection) -> None:
        connection.execution_options(**self.execution_options)

    def restore(self) -> None:
        """Point the engine back at its own URL and stop listening."""
        from sqlalchemy import event

        if self._listening:
            event.remove(self.engine, "do_connect", self._do_connect)
            if self.execution_options:
                event.remove(self.engine, "engine_connect", self._set_options)
            self._listening = False
        if self._original_url is not None:
            self.engine.url = self._original_url
            self._original_url = None
        self.engine.dispose()


def _is_fastapi(obj: Any) -> bool:
    # by class name, not isinstance: FastAPI is the app's dependency, not dbtest's
    return any(c.__name__ == "FastAPI" and c.__module__.startswith("fastapi")
               for c in type(obj).__mro__)


@dataclass
class AppOverrides:
    """A FastAPI app's session dependencies, overridden to yield the test's ``db`` while
    a test runs (FastAPI's ``app.dependency_overrides``)."""

    app: Any
    dependencies: list[Any]

    @classmethod
    def resolve(cls, app: Any, dependencies: list[Any]) -> AppOverrides:
        """The app and dependencies, import paths resolved; a :class:`ConfigError` for
        anything that is not a FastAPI app or a sync dependency function."""
        what = "plug_app(app=...)"
        name = repr(app)
        obj = import_object(app, what=what) if isinstance(app, str) else app
        if not _is_fastapi(obj):
            kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
            raise ConfigError(
                f"{what}: {name} is a {kind}, not a FastAPI app: only FastAPI has the "
                f"dependency_overrides that session_dependency needs. Pass the FastAPI "
                f"instance (e.g. 'myapp.main:app'); for another ASGI app (Starlette, "
                f"Litestar), bind its sessionmaker instead: plug_app('myapp.db:SessionLocal').")
        found = []
        for dep in dependencies:
            label = repr(dep)
            where = "plug_app(session_dependency=...)"
            func = import_object(dep, what=where) if isinstance(dep, str) else dep
            if not callable(func):
                raise ConfigError(
                    f"{where}: {label} is a {type(func).__qualname__}, not a dependency "
                    f"function. Pass the function the app's routes name in Depends(...), "
                    f"e.g. 'myapp.deps:get_db'.")
            if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
                raise ConfigError(
                    f"{where}: {label} is async; the test's db session is sync. Pass the "
                    f"app's async_sessionmaker to plug_app() instead (its sessions join the "
                    f"test's async_db in async tests), e.g. plug_app('myapp.db:async_session').")
            found.append(func)
        return cls(obj, found)

    def apply(self, session: Any) -> list[tuple[Any, Any]]:
        """Override each dependency with one returning ``session``; the previous
        overrides, to give :meth:`undo`."""
        overrides = self.app.dependency_overrides
        previous = [(dep, overrides.get(dep)) for dep in self.dependencies]
        for dep in self.dependencies:
            overrides[dep] = lambda: session
        return previous

    def undo(self, previous: list[tuple[Any, Any]]) -> None:
        """Put back the overrides :meth:`apply` replaced (the app's own, if any)."""
        overrides = self.app.dependency_overrides
        for dep, before in previous:
            if before is None:
                overrides.pop(dep, None)
            else:
                overrides[dep] = before
