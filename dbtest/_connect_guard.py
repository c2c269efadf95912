"""Stop a schema build from connecting anywhere but the database dbtest is building.

An Alembic ``env.py`` that ignores ``config.attributes["connection"]`` and builds its own
engine from the application's settings migrates whatever server those settings name (a
developer's database, a shared staging server) instead of dbtest's template. While a
build runs, :class:`ConnectGuard` listens to SQLAlchemy's ``do_connect`` event on every
engine: a connection attempt (from this thread) to any database other than the build
database is refused *before* it connects, and the build stops with a
:class:`~dbtest.errors.MigrationError` that says how to fix ``env.py``. Connections to the
build database itself (e.g. an engine made from the ``sqlalchemy.url`` dbtest sets) are
allowed. Connections made without SQLAlchemy (a raw ``psycopg.connect``) are not seen.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from dbtest.errors import MigrationError

if TYPE_CHECKING:
    from types import TracebackType

    from sqlalchemy import Connection

__all__ = ["ENV_PY_FIX", "ConnectGuard"]

ENV_PY_FIX = '''Make env.py use the connection dbtest hands it when there is one (Alembic's
"connection sharing" recipe), e.g.:

    def run_migrations_online():
        connection = config.attributes.get("connection")
        if connection is not None:          # dbtest, or any caller that shares one
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
            return
        ...  # build your own (async) engine as before

(dbtest's connection is a synchronous SQLAlchemy Connection, also for async apps.)'''


def _target(params: dict[str, Any]) -> tuple[str, str, str]:
    """(database, host, port) of a dialect's connect parameters (psycopg, asyncpg...)."""
    database = params.get("dbname") or params.get("database") or ""
    return str(database), str(params.get("host") or ""), str(params.get("port") or "5432")


def _describe(target: tuple[str, str, str]) -> str:
    database, host, port = target
    return f"database {database or '(default)'!r} on {host or '(default host)'}:{port}"


class ConnectGuard:
    """While active, refuse SQLAlchemy connections (from this thread) to any database other
    than ``connection``'s; ``foreign`` lists the refused targets."""

    def __init__(self, connection: Connection, what: str) -> None:
        _cargs, params = connection.dialect.create_connect_args(connection.engine.url)
        self.allowed = _target(dict(params))
        self.what = what
        self.foreign: list[str] = []
        self._thread = threading.get_ident()

    def _check(self, dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]
               ) -> None:
        if threading.get_ident() != self._thread:
            return
        target = _target(cparams)
        if target != self.allowed:
            self.foreign.append(f"{_describe(target)} ({dialect.name}+{dialect.driver})")
            raise MigrationError(self.message())

    def message(self) -> str:
        """What happened and how to fix ``env.py``."""
        return (f"{self.what}: env.py tried to connect to {self.foreign[0]} instead of using "
                f"the connection dbtest handed it ({_describe(self.allowed)}). "
                f"dbtest refused that connection before it was made, so nothing was written "
                f"there, and kept no template.\n{ENV_PY_FIX}")

    def __enter__(self) -> ConnectGuard:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "do_connect", self._check)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.remove(Engine, "do_connect", self._check)
