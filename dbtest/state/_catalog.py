"""What the catalog says about the tables a state reads: columns, keys, volatile defaults.

Everything here is read from ``pg_catalog`` through the caller's connection, so it sees
the test's own uncommitted DDL. Schema ``dbtest_internal`` (leak detection) is never
listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtest._leaks import INTERNAL_SCHEMA
from dbtest.errors import SnapshotError

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["Column", "Table", "all_tables", "describe", "resolve_tables"]

# Column defaults whose value differs on every run: timestamps taken from the clock,
# random uuids. They are masked unless the caller asks otherwise.
_VOLATILE_DEFAULT = re.compile(
    r"\b(now|clock_timestamp|statement_timestamp|transaction_timestamp|timeofday|"
    r"gen_random_uuid|uuid_generate_v1|uuid_generate_v1mc|uuid_generate_v4|random)\s*\(|"
    r"\b(current_timestamp|current_date|current_time|localtimestamp|localtime)\b",
    re.IGNORECASE)
_SEQUENCE_DEFAULT = re.compile(r"\bnextval\s*\(", re.IGNORECASE)


@dataclass(frozen=True)
class Column:
    """One column and how its values are read and shown."""

    name: str
    attnum: int
    #: string, json, plain, tstz, ts, date, bytea or other (see :mod:`._render`)
    kind: str
    type_sql: str
    default: str | None
    identity: bool
    notnull: bool

    @property
    def generated_key(self) -> bool:
        """Filled by a sequence or identity: a surrogate value that shifts between runs."""
        return self.identity or bool(self.default and _SEQUENCE_DEFAULT.search(self.default))

    @property
    def volatile(self) -> bool:
        """Defaults to the clock, a random uuid or a sequence."""
        return self.generated_key or bool(
            self.default and _VOLATILE_DEFAULT.search(self.default))


@dataclass
class Table:
    """A table (or partitioned table) with its primary key and single-column foreign keys."""

    oid: int
    schema: str
    name: str
    columns: tuple[Column, ...]
    pk: tuple[str, ...]
    #: column -> (referenced table oid, referenced column), single-column foreign keys only
    fks: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """``users`` for tables in ``public``, else ``schema.table``."""
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"

    @property
    def surrogate(self) -> bool:
        """A single-column primary key filled by a sequence, identity or random uuid."""
        if len(self.pk) != 1:
            return False
        return self.column(self.pk[0]).volatile

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise SnapshotError(f"table {self.display!r} has no column {name!r}; its columns: "
                            f"{', '.join(c.name for c in self.columns)}. Use one of them.")


def value_kind(typname: str, category: str) -> str:
    """How a column of type *typname* (pg_type category *category*) is rendered."""
    if typname in ("json", "jsonb"):
        return "json"
    if typname in ("timestamptz", "timestamp", "date", "bytea"):
        return {"timestamptz": "tstz", "timestamp": "ts"}.get(typname, typname)
    if category in ("S", "E"):
        return "string"
    if (category in ("N", "B") and typname != "money") or typname == "uuid":
        return "plain"  # canonical text that never needs quoting
    return "other"


_TABLES_SQL = f"""
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '{INTERNAL_SCHEMA}')
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT LIKE 'pg\\_toast%'
ORDER BY n.nspname = 'public' DESC, n.nspname, c.relname
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attnum, a.attname, bt.typname, bt.typcategory::text,
       format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid),
       a.attidentity <> '', a.attnotnull
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(:oids) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_KEYS_SQL = """
SELECT con.conrelid, con.contype::text, con.confrelid,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
             ORDER BY k.i),
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
             ORDER BY k.i)
FROM pg_constraint con
WHERE con.conrelid = ANY(:oids) AND con.contype IN ('p', 'f')
"""


def all_tables(conn: Connection) -> list[tuple[int, str, str]]:
    """(oid, schema, name) of every user table, ``public`` first."""
    from sqlalchemy import text

    return [(int(o), str(s), str(n)) for o, s, n in conn.execute(text(_TABLES_SQL)).all()]


def table_name_of(value: Any) -> str:
    """A table name from a string, a SQLAlchemy ``Table`` or a mapped class."""
    if isinstance(value, str):
        return value
    table = getattr(value, "__table__", value)
    name = getattr(table, "name", None)
    if not isinstance(name, str):
        raise SnapshotError(f"{value!r} is not a table: pass a table name, a SQLAlchemy Table "
                            f"or a mapped class")
    schema = getattr(table, "schema", None)
    return f"{schema}.{name}" if schema else name


def resolve_tables(conn: Connection, names: tuple[Any, ...]) -> list[int]:
    """The oids of ``names`` (all user tables when empty), in the given order."""
    from sqlalchemy import text

    if not names:
        return [oid for oid, _, name in all_tables(conn) if name != "alembic_version"]
    oids: list[int] = []
    for value in names:
        name = table_name_of(value)
        oid = conn.execute(text(
            "SELECT c.oid FROM pg_class c WHERE c.oid = coalesce(to_regclass(:n), "
            "to_regclass(quote_ident(:n))) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"),
            {"n": name}).scalar()
        if oid is None:
            known = ", ".join(n if s == "public" else f"{s}.{n}"
                              for _, s, n in all_tables(conn)) or "none"
            raise SnapshotError(f"table {name!r} does not exist in this database (tables: "
                                f"{known}). Check the name, or the schema it lives in.")
        if int(oid) not in oids:
            oids.append(int(oid))
    return oids


def describe(conn: Connection, oids: list[int]) -> dict[int, Table]:
    """Catalog facts of ``oids`` and of every table their foreign keys point at."""
    from sqlalchemy import text

    tables: dict[int, Table] = {}
    todo = list(dict.fromkeys(oids))
    while todo:
        batch, todo = todo, []
        names = conn.execute(text(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE c.oid = ANY(:oids)"), {"oids": batch}).all()
        cols: dict[int, list[Column]] = {}
        for rel, num, name, typname, cat, type_sql, default, ident, notnull in conn.execute(
                text(_COLUMNS_SQL), {"oids": batch}).all():
            cols.setdefault(int(rel), []).append(Column(
                str(name), int(num), value_kind(str(typname), str(cat)), str(type_sql),
                None if default is None else str(default), bool(ident), bool(notnull)))
        for oid, schema, name in names:
            tables[int(oid)] = Table(int(oid), str(schema), str(name),
                                     tuple(cols.get(int(oid), ())), ())
        for rel, contype, ref, cols_, ref_cols in conn.execute(
                text(_KEYS_SQL), {"oids": batch}).all():
            table = tables[int(rel)]
            if contype == "p":
                table.pk = tuple(cols_)
            elif len(cols_) == 1 and cols_[0] not in table.fks:
                table.fks[cols_[0]] = (int(ref), ref_cols[0])
                if int(ref) not in tables and int(ref) not in todo:
                    todo.append(int(ref))
    return tables
