"""Alembic environment of the example schema.

Follows Alembic's cookbook recipe "Sharing a Connection across one or more programmatic
migration commands": a caller such as dbtest puts a live ``Connection`` into
``config.attributes["connection"]`` and owns its transaction; otherwise an engine is built from
``sqlalchemy.url`` in alembic.ini or the ``DATABASE_URL`` environment variable.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, pool
from sqlalchemy.engine import URL, make_url

from migrations_example.db import with_driver
from migrations_example.models import Base

config = context.config
target_metadata = Base.metadata

# Configure logging only when Alembic runs on its own: a caller that hands us a connection
# (dbtest inside pytest) has its own logging, which fileConfig would otherwise replace.
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> URL | None:
    raw = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not raw:
        return None
    url = make_url(raw)
    # A bare postgresql:// URL means psycopg2 to SQLAlchemy; this project ships psycopg 3.
    if url.drivername in ("postgresql", "postgres"):
        url = with_driver(url, "psycopg")
    return url


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``); no database needed."""
    url = _url()
    if url is None:
        context.configure(
            dialect_name="postgresql", target_metadata=target_metadata, literal_binds=True
        )
    else:
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_server_default=True,
    )
    # If the caller's connection is already in a transaction, Alembic joins it and the caller
    # commits; otherwise this block is the transaction (PostgreSQL DDL is transactional).
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection, or through a new engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_migrations(connection)
        return
    url = _url()
    if url is None:
        # CommandError: the alembic CLI prints it as one clean line instead of a traceback.
        raise CommandError(
            "no database to migrate: set sqlalchemy.url in alembic.ini or the DATABASE_URL "
            "environment variable"
        )
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _run_migrations(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
