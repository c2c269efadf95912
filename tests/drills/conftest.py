"""Fixtures of the fault drills: a private cache per module, an outside server holding data
dbtest does not own, and throwaway projects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _kit import Precious, Project

import dbtest
from dbtest.provision._server import PostgresServer


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own cache dir, with the cluster already initdb'd (~0.5-1 s, once):
    its registry sees only the drills' servers."""
    from dbtest.provision._binaries import find_binaries
    from dbtest.provision._local import LocalCluster

    path = tmp_path_factory.mktemp("drill-cache")
    LocalCluster(find_binaries(), path).ensure_cached()
    return path


@pytest.fixture(scope="module")
def outside() -> Iterator[tuple[PostgresServer, Precious]]:
    """A server dbtest did not make for the drills (the ``url`` backend's situation), with a
    database and a table of someone else's that every drill checks afterwards."""
    with dbtest.ephemeral_postgres(port=0) as server:
        yield server, Precious(server.dsn_for)


@pytest.fixture
def project(tmp_path: Path, cache: Path) -> Iterator[Callable[..., Project]]:
    """Make throwaway projects in ``tmp_path`` (runs still going at the end are killed)."""
    made: list[Project] = []

    def make(name: str = "proj", **kwargs: Any) -> Project:
        made.append(Project(tmp_path / name, kwargs.pop("cache", cache), **kwargs))
        return made[-1]

    yield make
    for proj in made:
        proj.close()
