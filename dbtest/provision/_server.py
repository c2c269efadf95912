"""`PostgresServer`: what every backend hands out, and how to reach it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from dbtest._databases import DropReport, admin_connection, create_database, drop_database
from dbtest.errors import MaskedStr

__all__ = ["ConnectionParams", "PostgresServer"]


@dataclass(frozen=True)
class ConnectionParams:
    """Where a server listens and who to connect as."""

    host: str  # a unix socket folder (starts with "/") or a host name
    port: int
    user: str
    password: str | None = field(default=None, repr=False)  # never in a traceback
    dbname: str = "postgres"

    def dsn(self, dbname: str | None = None) -> str:
        """A libpq conninfo string."""
        parts = {"host": self.host, "port": str(self.port), "user": self.user,
                 "dbname": dbname or self.dbname}
        if self.password:
            parts["password"] = self.password
        return MaskedStr(" ".join(f"{k}={_quote_conninfo(v)}" for k, v in parts.items()))

    def url(self, dbname: str | None = None, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL for ``driver`` (psycopg, asyncpg, psycopg2...)."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        name = quote(dbname or self.dbname, safe="")
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        if self.host.startswith("/"):
            return MaskedStr(f"{scheme}://{auth}@/{name}?host={quote(self.host, safe='/')}"
                             f"&port={self.port}")
        return MaskedStr(f"{scheme}://{auth}@{self.host}:{self.port}/{name}")


def _quote_conninfo(value: str) -> str:
    if value and all(c not in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class PostgresServer:
    """A running PostgreSQL server handed out by :func:`dbtest.ephemeral_postgres`.

    ``url`` is a SQLAlchemy URL for psycopg 3, ``async_url`` one for asyncpg, ``dsn`` a
    libpq conninfo string; each points at the ``postgres`` maintenance database. Use
    :meth:`url_for` / :meth:`dsn_for` for another database.
    """

    #: where the server listens and who to connect as
    params: ConnectionParams
    #: server version, e.g. ``"15.18"``
    version: str
    #: the backend that provided it: ``local``, ``embedded``, ``docker`` or ``url``
    backend: str
    #: numeric server version, e.g. 150018
    version_num: int = 0
    #: backend-specific facts shown by ``dbtest up`` / ``doctor`` (data dir, run-as user...)
    details: dict[str, Any] = field(default_factory=dict)
    #: called after a template was built, so a local cluster can keep it for the next run
    on_template_built: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of the maintenance database."""
        return self.params.url()

    @property
    def async_url(self) -> str:
        """SQLAlchemy URL (asyncpg driver) of the maintenance database."""
        return self.params.url(driver="asyncpg")

    @property
    def dsn(self) -> str:
        """libpq conninfo string of the maintenance database."""
        return self.params.dsn()

    @property
    def major(self) -> int:
        """Major server version (15 for 15.18)."""
        return self.version_num // 10000

    def url_for(self, dbname: str, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of ``dbname`` on this server."""
        return self.params.url(dbname, driver)

    def dsn_for(self, dbname: str) -> str:
        """libpq conninfo string of ``dbname`` on this server."""
        return self.params.dsn(dbname)

    def create_database(self, name: str, template: str | None = None, *,
                        purpose: str = "user") -> str:
        """Create ``name`` (optionally as a copy of ``template``), marked as dbtest's."""
        with admin_connection(self.dsn) as conn:
            create_database(conn, name, purpose=purpose, template=template,
                            strategy="file_copy" if self.backend in ("local", "embedded")
                            else None)
        return name

    def drop_database(self, name: str, *, force: bool = True) -> DropReport:
        """Drop ``name`` if dbtest created it; refuse (RefusedError) otherwise."""
        with admin_connection(self.dsn) as conn:
            return drop_database(conn, name, force=force)
