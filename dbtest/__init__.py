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
    # provisioning
    "ephemeral_postgres": "dbtest.provision",
    "PostgresServer": "dbtest.provision._server",
    "Settings": "dbtest.settings",
    # plugging dbtest into an app that owns its engine and sessions
    "plug_app": "dbtest._integration",
    "database_url": "dbtest._integration",
    "BuildContext": "dbtest._build",
    # isolation without pytest
    "savepoint": "dbtest._isolation",
    "async_savepoint": "dbtest._isolation",
    # seeds, factories, bulk loading
    "SeedContext": "dbtest.seeding",
    "load_seeds": "dbtest.seeding",
    "seed_command": "dbtest.seeding",
    "SeedReport": "dbtest.seeding",
    "bulk_insert": "dbtest.bulk",
    "abulk_insert": "dbtest.bulk",
    "acreate": "dbtest.factories",
    "acreate_batch": "dbtest.factories",
    "Fake": "dbtest.fakes",
    "FastFaker": "dbtest.fakes",
    # data snapshots
    "table_state": "dbtest.state",
    "query_state": "dbtest.state",
    "schema_state": "dbtest.state",
    "changes": "dbtest.state",
    # database snapshots and migration checks
    "save_snapshot": "dbtest.snapshots",
    "restore_snapshot": "dbtest.snapshots",
    "list_snapshots": "dbtest.snapshots",
    "drop_snapshot": "dbtest.snapshots",
    "check_migrations": "dbtest._migrations_check",
    "assert_migrations": "dbtest._migrations_check",
    # concurrency
    "Scenario": "dbtest.concurrency",
    "run_concurrently": "dbtest.concurrency",
    "check_anomalies": "dbtest.concurrency",
    # assertions
    "assert_row_count": "dbtest.assertions",
    "assert_rows": "dbtest.assertions",
    "assert_cascade": "dbtest.assertions",
    "audit_foreign_keys": "dbtest.assertions",
    "track_changes": "dbtest.assertions",
    "assert_aggregate": "dbtest.assertions",
    "count_queries": "dbtest.assertions",
    "assert_max_queries": "dbtest.assertions",
    "assert_num_queries": "dbtest.assertions",
    "assert_constant_queries": "dbtest.assertions",
    "Inserted": "dbtest.assertions",
    "Updated": "dbtest.assertions",
    "Deleted": "dbtest.assertions",
    "TableChanges": "dbtest.assertions",
    "FkAuditFinding": "dbtest.assertions",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from dbtest._build import BuildContext as BuildContext
    from dbtest._integration import database_url as database_url
    from dbtest._integration import plug_app as plug_app
    from dbtest._isolation import async_savepoint as async_savepoint
    from dbtest._isolation import savepoint as savepoint
    from dbtest.provision import ephemeral_postgres as ephemeral_postgres
    from dbtest.provision._server import PostgresServer as PostgresServer
    from dbtest.settings import Settings as Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dbtest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
