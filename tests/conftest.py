"""Shared fixtures of dbtest's own suite (the plugin itself is loaded by its entry point)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
