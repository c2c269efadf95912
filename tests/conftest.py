"""Shared fixtures of dbtest's own suite (the plugin itself is loaded by its entry point)."""

from __future__ import annotations

from collections.abc import Iterator

# pytester snapshots sys.modules around each of its tests and removes what the test
# imported; SQLAlchemy's compiled extensions cannot be imported twice (a re-imported
# sqlalchemy.sql.visitors then fails with "'InternalTraversal' object is not callable").
# Importing what dbtest's in-process paths use here puts it in every snapshot.
import alembic.command  # noqa: F401
import pytest
import sqlalchemy.dialects.postgresql.psycopg
import sqlalchemy.orm  # noqa: F401

import dbtest
from dbtest.provision._server import PostgresServer


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this test module's own, for tests that build templates or databases that
    must not end up in the run's shared server (or its cached cluster)."""
    with dbtest.ephemeral_postgres() as server:
        yield server


def pytest_configure(config: pytest.Config) -> None:
    # pytester moves HOME, and with it the default cache dir: without this, every
    # pytester run would initdb a new cache instead of copying the cached cluster
    import os

    from dbtest.settings import default_cache_dir

    os.environ.setdefault("DBTEST_CACHE_DIR", str(default_cache_dir()))
