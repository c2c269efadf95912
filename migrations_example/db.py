"""Where the example app finds its database: the ``DATABASE_URL`` environment variable."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

__all__ = ["database_url", "with_driver"]


def database_url(driver: str = "psycopg") -> URL:
    """Return ``DATABASE_URL`` as a SQLAlchemy URL that uses ``driver``.

    Hosting platforms hand out ``postgres://`` or ``postgresql://`` URLs without a driver, and
    SQLAlchemy would pick psycopg2 for those; the app needs psycopg 3 (sync: migrations,
    services) or asyncpg (the async web app), so the driver is set here.
    """
    raw = os.environ.get("DATABASE_URL")
    if not raw:
        raise RuntimeError(
            "DATABASE_URL is not set; export it, e.g. DATABASE_URL=postgresql://user@localhost/app"
        )
    return with_driver(make_url(raw), driver)


def with_driver(url: URL, driver: str) -> URL:
    """Return ``url`` with its PostgreSQL driver replaced by ``driver``."""
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise RuntimeError(f"expected a PostgreSQL URL, got {url.render_as_string()!r}")
    return url.set(drivername=f"postgresql+{driver}")
