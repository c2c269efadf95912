"""Foreign keys as the database has them: rules, columns, indexes, privileges.

One catalog query serves both :func:`dbtest.assert_cascade` (which tables a delete can reach)
and :func:`dbtest.audit_foreign_keys` (rules and indexes). Schema ``dbtest_internal`` is
skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dbtest._leaks import INTERNAL_SCHEMA
from dbtest.assertions._db import query

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["RULES", "DbForeignKey", "load_foreign_keys", "reach"]

RULES = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT", "r": "RESTRICT", "a": "NO ACTION"}

_INDEXED = """EXISTS (SELECT 1 FROM pg_index i
               CROSS JOIN LATERAL (SELECT array_agg(k) AS lead
                                   FROM (SELECT unnest(i.indkey::int2[]) AS k
                                         LIMIT cardinality(con.conkey)) ks) x
               WHERE i.indrelid = c.oid AND i.indpred IS NULL AND i.indisvalid
                 AND x.lead @> con.conkey AND x.lead <@ con.conkey)"""
_NULLABLE = """NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                   AND a.attnum = ANY (con.conkey) AND a.attnotnull)"""
_FK_SQL = """
SELECT con.conname, c.oid, n.nspname, c.relname, pg_table_is_visible(c.oid),
       r.oid, rn.nspname, r.relname, pg_table_is_visible(r.oid), con.confdeltype::text,
       has_table_privilege(c.oid, 'SELECT'),
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num ORDER BY k.ord),
       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = k.num ORDER BY k.ord),
       {indexed}, {nullable}
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = con.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE con.contype = 'f' AND n.nspname <> '{internal}' AND rn.nspname <> '{internal}'
ORDER BY n.nspname, c.relname, con.conname
"""
_FK_FULL = _FK_SQL.format(indexed=_INDEXED, nullable=_NULLABLE, internal=INTERNAL_SCHEMA)
_FK_LIGHT = _FK_SQL.format(indexed="false", nullable="false", internal=INTERNAL_SCHEMA)


@dataclass(frozen=True)
class DbForeignKey:
    """One foreign key constraint from the catalog (``table`` references ``ref_table``)."""

    name: str
    table_oid: int
    schema: str
    table: str
    table_visible: bool
    ref_oid: int
    ref_schema: str
    ref_table: str
    ref_visible: bool
    on_delete: str
    readable: bool
    columns: tuple[str, ...]
    ref_columns: tuple[str, ...]
    indexed: bool
    nullable: bool

    @property
    def display(self) -> str:
        """The referencing table's name as a user writes it."""
        return self.table if self.table_visible else f"{self.schema}.{self.table}"

    @property
    def ref_display(self) -> str:
        """The referenced table's name as a user writes it."""
        return self.ref_table if self.ref_visible else f"{self.ref_schema}.{self.ref_table}"


def load_foreign_keys(conn: Connection, *, details: bool = True) -> list[DbForeignKey]:
    """Every foreign key of the database outside ``dbtest_internal``.

    Without ``details`` (what a cascade needs), ``indexed`` and ``nullable`` are not looked
    up and read False.
    """
    return [DbForeignKey(r[0], int(r[1]), r[2], r[3], bool(r[4]), int(r[5]), r[6], r[7],
                         bool(r[8]), RULES[r[9]], bool(r[10]), tuple(r[11]), tuple(r[12]),
                         bool(r[13]), bool(r[14]))
            for r in query(conn, _FK_FULL if details else _FK_LIGHT)]


def reach(fks: Iterable[DbForeignKey], start: int) -> list[tuple[DbForeignKey, tuple[str, ...]]]:
    """The foreign keys a delete from table ``start`` fires, with the constraint path to each.

    A ``CASCADE`` carries the delete on into the referencing table; every other rule stops
    there (``SET NULL`` / ``SET DEFAULT`` update, ``RESTRICT`` / ``NO ACTION`` refuse).
    """
    by_ref: dict[int, list[DbForeignKey]] = {}
    for fk in fks:
        by_ref.setdefault(fk.ref_oid, []).append(fk)
    out: list[tuple[DbForeignKey, tuple[str, ...]]] = []
    seen_fk: set[str] = set()
    todo: list[tuple[int, tuple[str, ...]]] = [(start, ())]
    deleted = {start}
    while todo:
        oid, path = todo.pop(0)
        for fk in by_ref.get(oid, []):
            key = f"{fk.table_oid}:{fk.name}"
            if key in seen_fk:
                continue
            seen_fk.add(key)
            out.append((fk, (*path, fk.name)))
            if fk.on_delete == "CASCADE" and fk.table_oid not in deleted:
                deleted.add(fk.table_oid)
                todo.append((fk.table_oid, (*path, fk.name)))
    return out
