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
    "PostgresServer": "dbtest.provision",
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
    "bulk_create": "dbtest.factories",
    "abulk_create": "dbtest.factories",
    "ModelFactory": "dbtest.factories",
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
    "MigrationReport": "dbtest._migrations_check",
    "CheckResult": "dbtest._migrations_check",
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
    # the same names, typed: mypy and IDEs read these, the runtime imports lazily below
    from dbtest._build import BuildContext as BuildContext
    from dbtest._integration import database_url as database_url
    from dbtest._integration import plug_app as plug_app
    from dbtest._isolation import async_savepoint as async_savepoint
    from dbtest._isolation import savepoint as savepoint
    from dbtest._migrations_check import CheckResult as CheckResult
    from dbtest._migrations_check import MigrationReport as MigrationReport
    from dbtest._migrations_check import assert_migrations as assert_migrations
    from dbtest._migrations_check import check_migrations as check_migrations
    from dbtest.assertions import Deleted as Deleted
    from dbtest.assertions import FkAuditFinding as FkAuditFinding
    from dbtest.assertions import Inserted as Inserted
    from dbtest.assertions import TableChanges as TableChanges
    from dbtest.assertions import Updated as Updated
    from dbtest.assertions import assert_aggregate as assert_aggregate
    from dbtest.assertions import assert_cascade as assert_cascade
    from dbtest.assertions import assert_constant_queries as assert_constant_queries
    from dbtest.assertions import assert_max_queries as assert_max_queries
    from dbtest.assertions import assert_num_queries as assert_num_queries
    from dbtest.assertions import assert_row_count as assert_row_count
    from dbtest.assertions import assert_rows as assert_rows
    from dbtest.assertions import audit_foreign_keys as audit_foreign_keys
    from dbtest.assertions import count_queries as count_queries
    from dbtest.assertions import track_changes as track_changes
    from dbtest.bulk import abulk_insert as abulk_insert
    from dbtest.bulk import bulk_insert as bulk_insert
    from dbtest.concurrency import Scenario as Scenario
    from dbtest.concurrency import check_anomalies as check_anomalies
    from dbtest.concurrency import run_concurrently as run_concurrently
    from dbtest.factories import ModelFactory as ModelFactory
    from dbtest.factories import abulk_create as abulk_create
    from dbtest.factories import acreate as acreate
    from dbtest.factories import acreate_batch as acreate_batch
    from dbtest.factories import bulk_create as bulk_create
    from dbtest.fakes import Fake as Fake
    from dbtest.fakes import FastFaker as FastFaker
    from dbtest.provision import PostgresServer as PostgresServer
    from dbtest.provision import ephemeral_postgres as ephemeral_postgres
    from dbtest.seeding import SeedContext as SeedContext
    from dbtest.seeding import SeedReport as SeedReport
    from dbtest.seeding import load_seeds as load_seeds
    from dbtest.seeding import seed_command as seed_command
    from dbtest.settings import Settings as Settings
    from dbtest.snapshots import drop_snapshot as drop_snapshot
    from dbtest.snapshots import list_snapshots as list_snapshots
    from dbtest.snapshots import restore_snapshot as restore_snapshot
    from dbtest.snapshots import save_snapshot as save_snapshot
    from dbtest.state import changes as changes
    from dbtest.state import query_state as query_state
    from dbtest.state import schema_state as schema_state
    from dbtest.state import table_state as table_state


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dbtest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
