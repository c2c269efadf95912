"""dbtest: database integration tests against a real PostgreSQL, as fast as unit tests.

Public names are imported lazily, so installing dbtest adds nothing to a pytest run
that uses no database fixture.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ephemeral_postgres": "dbtest.provision",
    "PostgresServer": "dbtest.provision.server",
    "Settings": "dbtest.settings",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from dbtest.provision import ephemeral_postgres
    from dbtest.provision.server import PostgresServer
    from dbtest.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dbtest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
