"""Detect what escaped a savepoint test: rows or schema changes committed for real.

Each worker database records every write in ``dbtest_internal.touched`` (a name and the
writing transaction's id):

- **DML**: a statement-level trigger on every table (partitions included) records
  ``schema.table``. Tables created later get the trigger from the DDL event trigger, the
  moment they are created, so a table a test (or the app) creates at run time is watched
  like the others.
- **DDL**: event triggers on ``ddl_command_end`` and ``sql_drop`` record ``ddl:<command>
  <object>``. They need a superuser; on a server where dbtest's role is not one, a catalog
  fingerprint (how many catalog rows user objects have in ``pg_class``, ``pg_attribute``,
  ``pg_proc``, ``pg_namespace``, ``pg_type``, ``pg_constraint``, ``pg_trigger``,
  ``pg_attrdef``, ``pg_index``, and the sum of their row versions) taken at clone time is
  compared instead, after the test's rollback (see :data:`FINGERPRINT`).

Inside a test those records are rolled back with everything else, so a record written by
*another* transaction is one that was committed for real. The check is one query from
inside the test's own transaction (:data:`CHECK_IN_TRANSACTION`); the record's key holds
the transaction id, so a second connection writing the same table never waits on the
test's own uncommitted record. Who to blame is :class:`Tracker`'s job; what to say is
:func:`leak_message`'s. The fixtures (sync and async) only run the queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "CHECK_ALL",
    "CHECK_IN_TRANSACTION",
    "INTERNAL_SCHEMA",
    "Tracker",
    "check_query",
    "install",
    "leak_message",
    "reinstall_needed",
    "touched_tables",
]

INTERNAL_SCHEMA = "dbtest_internal"
TRIGGER = "dbtest_leak_check"
#: the prefix of a DDL record in ``touched``
DDL = "ddl:"
_WATCH = (f"'CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s "
          f"FOR EACH STATEMENT EXECUTE FUNCTION {INTERNAL_SCHEMA}.record_touch()'")
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
           WHERE c.relkind IN ('r', 'p')
             AND n.nspname NOT IN ('pg_catalog', 'information_schema', '{INTERNAL_SCHEMA}')
             AND n.nspname NOT LIKE 'pg\\_%'
  LOOP
    EXECUTE format({_WATCH}, t.rel);
  END LOOP;
END $$;
"""
_EVENTS = f"""
CREATE OR REPLACE FUNCTION {INTERNAL_SCHEMA}.record_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    CONTINUE WHEN r.schema_name = '{INTERNAL_SCHEMA}'
      OR (r.object_type = 'trigger' AND r.object_identity LIKE '{TRIGGER} on %');
    INSERT INTO {INTERNAL_SCHEMA}.touched
    VALUES ('{DDL}' || r.command_tag || coalesce(' ' || r.object_identity, ''), txid_current())
    ON CONFLICT DO NOTHING;
    IF r.object_type = 'table' AND r.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS',
                                                      'SELECT INTO') THEN
      EXECUTE format({_WATCH}, r.objid::regclass);  -- watch the new table's rows too
    END IF;
  END LOOP;
END $$;
CREATE OR REPLACE FUNCTION {INTERNAL_SCHEMA}.record_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE original LOOP
    CONTINUE WHEN r.schema_name = '{INTERNAL_SCHEMA}'
      OR (r.object_type = 'trigger' AND r.object_identity LIKE '{TRIGGER} on %');
    INSERT INTO {INTERNAL_SCHEMA}.touched
    VALUES ('{DDL}DROP ' || upper(r.object_type) || ' ' || r.object_identity, txid_current())
    ON CONFLICT DO NOTHING;
  END LOOP;
END $$;
CREATE EVENT TRIGGER dbtest_leak_ddl ON ddl_command_end
  EXECUTE FUNCTION {INTERNAL_SCHEMA}.record_ddl();
CREATE EVENT TRIGGER dbtest_leak_drop ON sql_drop
  EXECUTE FUNCTION {INTERNAL_SCHEMA}.record_drop();
"""
#: user objects' catalog rows (oid >= FirstNormalObjectId, and the ``public`` schema): how
#: many, and the sum of their row versions (xmin). A committed CREATE, ALTER or DROP changes
#: it: new row versions carry a transaction id above every older one, so with as many rows
#: as before the sum grows. Index range scans only.
FINGERPRINT = " || ';' || ".join(
    f"(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM {table} "
    f"WHERE {where})" for table, where in (
        ("pg_class", "oid >= 16384"),
        ("pg_attribute", "attrelid >= 16384 AND attnum > 0"),
        ("pg_proc", "oid >= 16384"),
        ("pg_namespace", "oid >= 16384 OR oid = 2200"),
        ("pg_type", "oid >= 16384"),
        ("pg_constraint", "oid >= 16384"),
        ("pg_trigger", "oid >= 16384"),
        ("pg_attrdef", "oid >= 16384"),
        ("pg_index", "indexrelid >= 16384"),
    ))
_BASELINE = f"""
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.baseline (fp text NOT NULL);
TRUNCATE {INTERNAL_SCHEMA}.baseline;
"""

#: run inside the test's transaction: records other transactions committed
CHECK_IN_TRANSACTION = (f"SELECT DISTINCT tbl FROM {INTERNAL_SCHEMA}.touched "
                        f"WHERE xid IS DISTINCT FROM txid_current_if_assigned()")
#: run outside any test transaction: every record is a committed one
CHECK_ALL = f"SELECT DISTINCT tbl FROM {INTERNAL_SCHEMA}.touched"
#: CHECK_ALL plus the catalog fingerprint, for databases without the DDL event triggers
#: (run outside the test's transaction: its own uncommitted DDL would count)
CHECK_FINGERPRINT = (f"{CHECK_ALL} UNION ALL SELECT '{DDL}the catalog changed (a CREATE, "
                     f"ALTER or DROP)' WHERE ({FINGERPRINT}) IS DISTINCT FROM "
                     f"(SELECT fp FROM {INTERNAL_SCHEMA}.baseline)")
#: VACUUM the leak record after this many checks (see :meth:`Tracker.vacuum_due`)
VACUUM_EVERY = 200
VACUUM = f"VACUUM {INTERNAL_SCHEMA}.touched"
#: what a database whose leak record was dropped reports
RECORD_DROPPED = f"{DDL}DROP SCHEMA {INTERNAL_SCHEMA} (dbtest's leak record)"


def install(connection: Connection) -> bool:
    """Install the leak triggers (in the connection's current transaction).

    Returns whether the DDL event triggers could be installed (they need a superuser);
    without them a catalog fingerprint is stored, and :func:`check_query` says to check
    it after the test's rollback instead.
    """
    from dbtest._sql import run_script

    run_script(connection, _INSTALL)
    superuser = bool(connection.exec_driver_sql(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar())
    if superuser:
        run_script(connection, _EVENTS)  # last: the statements above are not recorded
        return True
    run_script(connection, _BASELINE)
    connection.exec_driver_sql(
        f"INSERT INTO {INTERNAL_SCHEMA}.baseline SELECT {FINGERPRINT}")
    return False


def check_query(*, in_transaction: bool, ddl_events: bool = True) -> str | None:
    """The query that lists leak records (``None``: none to run at this point).

    ``in_transaction``: run from inside the test's transaction, before its rollback.
    Without the DDL event triggers only the after-rollback check can see DDL, so the
    in-transaction one is skipped (``None``).
    """
    if not ddl_events:
        return None if in_transaction else CHECK_FINGERPRINT
    return CHECK_IN_TRANSACTION if in_transaction else CHECK_ALL


def touched_tables(connection: Connection, *, in_transaction: bool = False,
                   ddl_events: bool = True) -> list[str]:
    """Leak records: tables changed and DDL (``ddl:...``) committed since the clone.

    ``in_transaction``: ``connection`` is still inside the test's transaction, whose own
    writes are not leaks.
    """
    query = check_query(in_transaction=in_transaction, ddl_events=ddl_events)
    if query is None:
        return []
    rows = connection.exec_driver_sql(query).all()
    return sorted(r[0] for r in rows)


def reinstall_needed(connection: Connection) -> bool:
    """Whether the database lacks the leak record (e.g. a test dropped the schema)."""
    row = connection.exec_driver_sql(
        f"SELECT to_regclass('{INTERNAL_SCHEMA}.touched') IS NULL").scalar()
    return bool(row)


def is_missing_record(exc: BaseException) -> bool:
    """Whether ``exc`` says the leak record is gone (someone dropped ``dbtest_internal``)."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in ("42P01", "3F000")  # undefined table / schema


@dataclass
class Tracker:
    """Who could have leaked: the tests that ran since each worker database's last clean
    check. A test's own teardown check blames that test; a check at the start of a test
    blames every test since the last clean one (a test that used no dbtest fixture may
    still write through the app's own engine)."""

    #: database name -> the tests (with a note) since its last clean check
    since_clean: dict[str, list[str]] = field(default_factory=dict)
    #: databases found clean during the current test
    _checked: set[str] = field(default_factory=set)
    #: database name -> clean checks since its leak record was last vacuumed
    _since_vacuum: dict[str, int] = field(default_factory=dict)

    def clean(self, database: str) -> None:
        """``database`` was just checked and nothing had leaked."""
        self.since_clean[database] = []
        self._checked.add(database)

    def vacuum_due(self, database: str) -> bool:
        """Whether ``database``'s leak record needs a VACUUM now. Every test's own records
        are rolled back and leave dead rows behind, which the checks would read through
        (a check took 1.3-1.7 ms after 5,000 tests); a VACUUM every
        :data:`VACUUM_EVERY` checks keeps the table at a page or two."""
        count = self._since_vacuum.get(database, 0) + 1
        self._since_vacuum[database] = 0 if count >= VACUUM_EVERY else count
        return count >= VACUUM_EVERY

    def ran(self, nodeid: str) -> None:
        """Test ``nodeid`` finished (teardown included). Where its own check came last,
        only its fixtures' teardown, after that check, can still have written."""
        for database, suspects in self.since_clean.items():
            suspects.append(f"{nodeid} (in its fixtures' teardown, after its own check)"
                            if database in self._checked else nodeid)
        self._checked.clear()

    def suspects(self, database: str) -> list[str]:
        """The tests since ``database``'s last clean check."""
        return list(self.since_clean.get(database, ()))


#: candidates named in full in a message (beyond: the first and last halves)
_MAX_NAMED = 100


def leak_message(records: Sequence[str], *, test: str, at_setup: bool,
                 suspects: Sequence[str] = ()) -> str:
    """The LeakError message: what leaked, who is to blame, and the fix."""
    tables = [r for r in records if not r.startswith(DDL)]
    ddl = [r[len(DDL):] for r in records if r.startswith(DDL)]
    what = []
    if tables:
        what.append(f"rows in {', '.join(tables)}")
    if ddl:
        what.append(f"schema changes ({'; '.join(ddl)})")
    leaked = " and ".join(what)
    fix = ("Use @pytest.mark.dbtest(isolation=\"fresh\") or the fresh_db fixture for tests "
           "that commit for real; code on the app's own engine must then reach that database "
           "too: dbtest.plug_app(engine, ...) points it there, or use fresh_db.url. The "
           "database was reset.")
    if not at_setup:
        return (f"{test} committed data outside its savepoint (another connection or a raw "
                f"COMMIT): {leaked}. {fix}")
    if len(suspects) == 1:
        who = f"committed by {suspects[0]}, the only test since the last clean check"
    elif suspects:
        shown = list(suspects)
        if len(shown) > _MAX_NAMED:  # the first and the last ones, and how many between
            half = _MAX_NAMED // 2
            shown = [*shown[:half], f"... {len(suspects) - 2 * half} more ...", *shown[-half:]]
        who = (f"committed by one of the {len(suspects)} tests since the last clean check: "
               f"{', '.join(shown)}")
    else:
        who = "committed by a fixture set up before it (module or session scope)"
    return (f"data committed outside a savepoint was found when {test} started (not by "
            f"{test}, which has not run yet, unless by a fixture it uses): {leaked}; {who}. "
            f"{fix}")
