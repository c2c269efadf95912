"""Detect data that escaped a savepoint test: committed through another connection or
a raw ``COMMIT``.

Each worker database gets a statement-level trigger on every table that records the
table's name and the writing transaction's id in ``dbtest_internal.touched``. Inside a
test those rows are rolled back with everything else. So, checked from inside the
test's own transaction just before its rollback, any row written by *another*
transaction is one that was committed for real: one query, no extra round trip for
the rollback. The key includes the transaction id, so a second connection writing the
same table never waits on the test's own uncommitted row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "CHECK_ALL",
    "CHECK_IN_TRANSACTION",
    "INTERNAL_SCHEMA",
    "install",
    "reinstall_needed",
    "touched_tables",
]

INTERNAL_SCHEMA = "dbtest_internal"
_INSTALL = f"""
CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA};
CREATE UNLOGGED TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.touched (
  tbl text NOT NULL, xid bigint NOT NULL, PRIMARY KEY (tbl, xid));
CREATE OR REPLACE FUNCTION {INTERNAL_SCHEMA}.record_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- txid_current() is the top-level transaction's id, also inside savepoints
  INSERT INTO {INTERNAL_SCHEMA}.touched
  VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, txid_current())
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT c.oid::regclass AS rel FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND n.nspname NOT IN ('pg_catalog', 'information_schema', '{INTERNAL_SCHEMA}')
             AND n.nspname NOT LIKE 'pg\\_%'
  LOOP
    EXECUTE format('CREATE TRIGGER dbtest_leak_check AFTER INSERT OR UPDATE OR DELETE OR '
                   'TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION '
                   '{INTERNAL_SCHEMA}.record_touch()', t.rel);
  END LOOP;
END $$;
"""


def install(connection: Connection) -> None:
    """Install the leak triggers (in the connection's current transaction)."""
    from dbtest._sql import run_script

    run_script(connection, _INSTALL)


#: run inside the test's transaction: rows other transactions committed
CHECK_IN_TRANSACTION = (f"SELECT DISTINCT tbl FROM {INTERNAL_SCHEMA}.touched "
                        f"WHERE xid IS DISTINCT FROM txid_current_if_assigned()")
#: run outside any test transaction: every row is a committed one
CHECK_ALL = f"SELECT DISTINCT tbl FROM {INTERNAL_SCHEMA}.touched"


def touched_tables(connection: Connection, *, in_transaction: bool = False) -> list[str]:
    """Tables changed by committed transactions since the database was cloned.

    ``in_transaction``: ``connection`` is still inside the test's transaction, whose own
    writes are not leaks.
    """
    query = CHECK_IN_TRANSACTION if in_transaction else CHECK_ALL
    rows = connection.exec_driver_sql(query).all()
    return sorted(r[0] for r in rows)


def reinstall_needed(connection: Connection) -> bool:
    """Whether the database lacks the leak record (e.g. a test dropped the schema)."""
    row = connection.exec_driver_sql(
        f"SELECT to_regclass('{INTERNAL_SCHEMA}.touched') IS NULL").scalar()
    return bool(row)
