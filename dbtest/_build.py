"""The ``callable:`` schema contract and the per-process ``setup`` hook.

A ``callable:<module>:<func>`` schema source builds the template database. dbtest calls
``func(connection)``, or ``func(connection, ctx)`` when the function takes two positional
arguments, where ``ctx`` is a :class:`BuildContext`:

- ``func`` runs inside the build transaction on ``ctx.connection``, which dbtest commits
  after it returns (PostgreSQL DDL is transactional). Do not commit or close it.
- It may open its own connections (``ctx.engine``, or an engine built from ``ctx.url``),
  but must close every one before returning: the build database is renamed into the
  template afterwards, and a connection left open is reported as a :class:`TemplateError`.
  Such connections do not see the uncommitted work on ``ctx.connection``.
- ``ctx.url`` contains no ``%`` for a local server, so it can go straight into Alembic's
  ``config.set_main_option("sqlalchemy.url", ...)``; ``ctx.alembic_url`` is always safe
  there (``%`` doubled, for passwords that need escaping).

The ``setup`` setting names a function dbtest calls once per test process, before the
first database is used, whether the template is then built or reused: the place for the
in-process side effects of an app's own init (setting ``Table.schema``, registering
listeners). A callable runs only when the template is built.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dbtest.errors import ConfigError, MigrationError, TemplateError

if TYPE_CHECKING:
    from sqlalchemy import URL, Connection, Engine

    from dbtest.settings import Settings

__all__ = ["BuildContext", "async_kwargs", "engine_kwargs", "import_object", "render_url",
           "run_callable", "run_setup"]


def import_object(path: str, *, what: str, root: Path | None = None) -> Any:
    """The object at ``path`` (``module:attr``, the attribute may be dotted), or a
    :class:`ConfigError` naming ``what`` asked for it and how to fix the path."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{what}: {path!r} is not an import path; write it as "
                          f"'module:attribute', e.g. 'myapp.db:engine'.")
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise ConfigError(f"{what}: importing module {module!r} of {path!r} failed: {detail}. "
                          f"Fix the module name (is its folder on sys.path / pythonpath?) or "
                          f"the module itself.") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what}: {path!r} does not resolve: {type(obj).__name__} "
                              f"{getattr(obj, '__name__', '')!r} has no attribute {part!r}. "
                              f"Check the attribute name.") from None
        except Exception as exc:  # a property that needs a context (e.g. Flask's app)
            raise ConfigError(f"{what}: reading {part!r} of {path!r} raised "
                              f"{type(exc).__name__}: {exc}. Pass the object itself, "
                              f"resolved where it can be (e.g. inside the app's context), "
                              f"instead of its import path.") from exc
    return obj


def render_url(url: URL) -> str:
    """``url`` as a string with the password, escaping only what must be escaped (SQLAlchemy's
    own rendering escapes a unix socket ``host=/run/...`` as ``%2F``, which Alembic's
    ``set_main_option`` rejects as an interpolation)."""
    auth = quote(url.username or "", safe="")
    if url.password:
        auth += ":" + quote(str(url.password), safe="")
    host = url.host or ""
    port = f":{url.port}" if url.port and url.host else ""
    query = "&".join(f"{quote(k, safe='')}={quote(str(v), safe='/')}"
                     for k, values in url.query.items()
                     for v in (values if isinstance(values, tuple) else (values,)))
    return (f"{url.drivername}://{auth}@{host}{port}/{quote(url.database or '', safe='')}"
            + (f"?{query}" if query else ""))


@dataclass
class BuildContext:
    """What a ``callable:`` schema function gets as its second argument.

    ``connection`` runs in the build transaction (committed by dbtest; do not commit or
    close it). ``url`` / ``alembic_url`` / :meth:`url_for` reach the build database;
    ``engine`` is a pool-less engine on it that dbtest disposes after the call. Every
    connection the function opens must be closed before it returns.
    """

    #: the build connection, inside the transaction dbtest commits after the call
    connection: Connection
    #: the build database's name (it becomes the template under another name)
    database: str
    #: SQLAlchemy driver of the build (the ``driver`` setting): ``psycopg`` or ``psycopg2``
    driver: str
    #: URL of the build database for ``driver``, password included, no ``%`` when the
    #: server's credentials need no escaping (dbtest's local servers never do)
    url: str
    #: ``url`` with ``%`` doubled: always safe for Alembic's ``set_main_option``
    alembic_url: str
    #: an engine on the build database (no pool: a closed connection is really closed);
    #: disposed by dbtest after the call
    engine: Engine

    def url_for(self, driver: str) -> str:
        """The build database's URL for another SQLAlchemy driver (e.g. ``asyncpg``)."""
        return self.url.replace(f"postgresql+{self.driver}://", f"postgresql+{driver}://", 1)


def _takes_context(func: Any) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def run_callable(func: Any, connection: Connection, spec: str) -> None:
    """Call a ``callable:`` schema function by the contract above and check that it closed
    every connection it opened on the build database."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    url = connection.engine.url
    text = render_url(url)
    engine = create_engine(text, poolclass=NullPool)
    ctx = BuildContext(connection, url.database or "", url.get_driver_name(), text,
                       text.replace("%", "%%"), engine)
    try:
        func(connection, ctx) if _takes_context(func) else func(connection)
    except Exception as exc:
        raise MigrationError(f"schema {spec!r}: the callable raised {type(exc).__name__}: "
                             f"{exc}. Fix the callable; the template was not built.") from exc
    finally:
        engine.dispose()
    left = _other_sessions(connection)
    if left:
        raise TemplateError(
            f"schema {spec!r}: the callable left {len(left)} connection(s) open on the build "
            f"database {ctx.database} ({'; '.join(left)}); the template was not built. Close "
            f"every connection it opens (use 'with engine.connect()' and engine.dispose() on "
            f"engines it creates), or work through the connection it is given.")


def _other_sessions(connection: Connection) -> list[str]:
    """Sessions on the build database other than the build connection (a closed client's
    backend takes a moment to exit, so wait up to a second for them to go)."""
    from sqlalchemy import text

    query = text("SELECT pid, coalesce(application_name, ''), coalesce(state, ''), "
                 "left(coalesce(query, ''), 60) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                 "AND backend_type = 'client backend'")
    deadline = time.monotonic() + 1.0
    while True:
        # statistics views are a snapshot per transaction: take a new one each time
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        rows = connection.execute(query).all()
        if not rows or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return [f"pid {pid} {state or 'open'}{' ' + app if app else ''}: {sql!r}"
            for pid, app, state, sql in rows]


_SETUP_DONE: set[str] = set()


def run_setup(settings: Settings) -> None:
    """Call the ``setup`` setting's function, once per process."""
    path = settings.setup
    if not path or path in _SETUP_DONE:
        return
    func = import_object(path, what="setup setting", root=settings.root)
    if not callable(func):
        raise ConfigError(f"setup setting: {path!r} is a {type(func).__name__}, not a "
                          f"function. Point it at a function taking no arguments.")
    _SETUP_DONE.add(path)
    try:
        func()
    except Exception as exc:
        _SETUP_DONE.discard(path)
        raise ConfigError(f"setup setting: {path}() raised {type(exc).__name__}: {exc}. "
                          f"Fix the function.") from exc


def engine_kwargs(settings: Settings) -> dict[str, Any]:
    """``create_engine()`` keyword arguments from the ``execution_options`` and
    ``connect_args`` settings (only those that are set)."""
    out: dict[str, Any] = {}
    if settings.execution_options:
        out["execution_options"] = dict(settings.execution_options)
    if settings.connect_args:
        out["connect_args"] = dict(settings.connect_args)
    return out


def async_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The part of :func:`engine_kwargs` that fits an async engine: ``connect_args`` are
    driver specific (libpq's ``options`` means nothing to asyncpg), so only
    ``execution_options`` carry over."""
    return {k: v for k, v in kwargs.items() if k == "execution_options"}
