"""What a scenario connects to, and how a failed step is classified.

Shared by :class:`~dbtest.concurrency.Scenario` and :func:`~dbtest.concurrency.run_concurrently`.
"""

from __future__ import annotations

from typing import Any

from dbtest.errors import ConcurrencyError, ConfigError

__all__ = [
    "DEADLOCK",
    "SERIALIZATION_FAILURE",
    "classify",
    "conninfo_for",
    "describe_error",
    "sqlalchemy_url_for",
]

SERIALIZATION_FAILURE = "40001"
DEADLOCK = "40P01"

_USE_FRESH_DB = ("A concurrency test needs separate connections that commit for real; the `db` "
                 "fixture is one connection inside a transaction that is rolled back, so other "
                 "sessions could never see its work. Use the fresh_db fixture: "
                 "Scenario(fresh_db.url) / run_concurrently(fn, n, url=fresh_db.url).")


def _refuse_connection_objects(target: Any, who: str) -> None:
    """Raise when ``target`` is a live session or connection instead of a URL."""
    module = type(target).__module__ or ""
    if not module.startswith(("sqlalchemy", "psycopg", "asyncpg")):
        return
    kind = type(target).__name__
    if kind in ("Engine", "AsyncEngine"):
        return
    raise ConcurrencyError(f"{who} was given a {module}.{kind}, not a URL. {_USE_FRESH_DB}")


def conninfo_for(target: Any, who: str = "Scenario") -> str:
    """A libpq conninfo string for ``target``.

    ``target`` is a SQLAlchemy URL (``postgresql+psycopg://...?host=/dir&port=5432``), a
    ``postgresql://`` URI, a libpq conninfo string, an object with a ``.dsn`` (``fresh_db``,
    ``PostgresServer``) or a SQLAlchemy ``Engine``. Sessions and connections are refused.
    """
    from dbtest.provision import parse_url

    _refuse_connection_objects(target, who)
    if type(target).__name__ in ("Engine", "AsyncEngine"):
        target = target.url.render_as_string(hide_password=False)
    elif not isinstance(target, str) and isinstance(getattr(target, "dsn", None), str):
        return str(target.dsn)
    if not isinstance(target, str):
        raise ConcurrencyError(f"{who} needs a database URL (str), fresh_db or an Engine; got "
                               f"{type(target).__name__}. {_USE_FRESH_DB}")
    if "://" in target:
        try:
            return parse_url(target).dsn()
        except ConfigError as exc:
            raise ConcurrencyError(f"{who}: {exc}") from None
    if "=" in target:
        return target
    raise ConcurrencyError(f"{who}: {target!r} is neither a postgresql:// URL nor a libpq "
                           f"conninfo string (host=... dbname=...). Pass fresh_db.url.")


def sqlalchemy_url_for(target: Any, *, is_async: bool, who: str) -> str:
    """A SQLAlchemy URL for ``target`` (async driver when ``is_async``)."""
    _refuse_connection_objects(target, who)
    if type(target).__name__ in ("Engine", "AsyncEngine"):
        return str(target.url.render_as_string(hide_password=False))
    attr = "async_url" if is_async else "url"
    value = getattr(target, attr, None)
    if not isinstance(target, str) and isinstance(value, str):
        return value
    if isinstance(target, str) and "://" in target:
        if is_async and target.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + target.split("://", 1)[1]
        if not is_async and target.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + target.split("://", 1)[1]
        return target
    raise ConcurrencyError(f"{who} needs a SQLAlchemy URL, fresh_db or an Engine for url=; got "
                           f"{type(target).__name__}. {_USE_FRESH_DB}")


def _database_error(exc: BaseException) -> BaseException | None:
    """The first exception in ``exc``'s chain that carries a SQLSTATE."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        orig = getattr(current, "orig", None)  # SQLAlchemy wraps the driver's error
        if isinstance(orig, BaseException) and getattr(orig, "sqlstate", None):
            return orig
        if getattr(current, "sqlstate", None):
            return current
        current = current.__cause__ or current.__context__
    return None


def classify(exc: BaseException) -> tuple[str, str | None]:
    """``(outcome, sqlstate)``: outcome is serialization_failure, deadlock or error."""
    db_error = _database_error(exc)
    sqlstate = getattr(db_error, "sqlstate", None) if db_error is not None else None
    if sqlstate == SERIALIZATION_FAILURE:
        return "serialization_failure", sqlstate
    if sqlstate == DEADLOCK:
        return "deadlock", sqlstate
    return "error", sqlstate


def describe_error(exc: BaseException) -> str:
    """A one-line, stable description: the server's primary message or ``Type: message``."""
    orig = getattr(exc, "orig", None)
    db_error = orig if isinstance(orig, BaseException) else exc
    if getattr(db_error, "sqlstate", None):
        diag = getattr(db_error, "diag", None)
        primary = getattr(diag, "message_primary", None) if diag is not None else None
        if primary:
            return str(primary)
        lines = str(db_error).strip().splitlines()
        return lines[0] if lines else type(db_error).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
