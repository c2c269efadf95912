"""Detect data that escaped a savepoint test: committed through another connection or
a raw ``COMMIT``.

Each worker database gets a statement-level trigger on every table that records the
table's name in ``dbtest_internal.touched``. Inside a test that row is rolled back with
everything else; a row still there after the rollback was committed for real.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["INTERNAL_SCHEMA", "install", "reinstall_needed", "touched_tables"]

INTERNAL_SCHEMA = "dbtest_internal"
_INSTALL = f"""
CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA};
CREATE UNLOGGED TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.touched (tbl text PRIMARY KEY);
CREATE OR REPLACE FUNCTION {INTERNAL_SCHEMA}.record_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INTERNAL_SCHEMA}.touched VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME)
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


def touched_tables(connection: Connection) -> list[str]:
    """Tables changed by committed transactions since the database was cloned."""
    rows = connection.exec_driver_sql(f"SELECT tbl FROM {INTERNAL_SCHEMA}.touched").all()
    return sorted(r[0] for r in rows)


def reinstall_needed(connection: Connection) -> bool:
    """Whether the database lacks the leak record (e.g. a test dropped the schema)."""
    row = connection.exec_driver_sql(
        f"SELECT to_regclass('{INTERNAL_SCHEMA}.touched') IS NULL").scalar()
    return bool(row)
