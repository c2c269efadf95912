"""``schema_state``: the database's schema as readable, diffable text.

A block per table (columns in order, then constraints, indexes and triggers by name),
then views, sequences not owned by a column, enum types and extensions. Everything dbtest
adds for itself (schema ``dbtest_internal``, ``dbtest_leak_check`` triggers) is left out.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dbtest._leaks import INTERNAL_SCHEMA
from dbtest.state._tables import title_name
from dbtest.state._values import INDENT, SchemaState

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["schema_state_sync"]

_USER_NS = (f"n.nspname NOT IN ('pg_catalog', 'information_schema', '{INTERNAL_SCHEMA}') "
            "AND n.nspname NOT LIKE 'pg\\_%'")

_TABLES = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition AND {_USER_NS}
ORDER BY n.nspname, c.relname
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = ANY(:oids) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS = """
SELECT conrelid, conname, pg_get_constraintdef(oid, true) FROM pg_constraint
WHERE conrelid = ANY(:oids) ORDER BY conrelid, conname
"""

_INDEXES = """
SELECT i.indrelid, c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = ANY(:oids) AND NOT EXISTS (
  SELECT FROM pg_constraint con WHERE con.conindid = i.indexrelid
  AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))
ORDER BY i.indrelid, c.relname
"""

_TRIGGERS = """
SELECT tgrelid, tgname, pg_get_triggerdef(oid, true) FROM pg_trigger
WHERE tgrelid = ANY(:oids) AND NOT tgisinternal AND tgname <> 'dbtest_leak_check'
ORDER BY tgrelid, tgname
"""

_OTHERS = f"""
SELECT 'type', n.nspname, t.typname,
       'enum (' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                   FROM pg_enum e WHERE e.enumtypid = t.oid) || ')'
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype = 'e' AND {_USER_NS}
UNION ALL
SELECT 'sequence', n.nspname, c.relname, format_type(s.seqtypid, NULL)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relkind = 'S' AND {_USER_NS} AND NOT EXISTS (
  SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')
  AND d.classid = 'pg_class'::regclass)
UNION ALL
SELECT 'extension', '', e.extname, '' FROM pg_extension e WHERE e.extname <> 'plpgsql'
ORDER BY 1, 2, 3
"""

_INDEX_DEF = re.compile(
    r"^CREATE (?P<unique>UNIQUE )?INDEX \S+ ON (?:ONLY )?\S+ USING (?P<rest>.*)$")
_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view",
          "f": "foreign table"}


def _name(schema: str, name: str) -> str:
    return title_name(name if schema in ("public", "") else f"{schema}.{name}")


def schema_state_sync(conn: Connection) -> SchemaState:
    """:func:`dbtest.schema_state` on a sync connection."""
    from sqlalchemy import text

    rels = conn.execute(text(_TABLES)).all()
    oids = [int(r[0]) for r in rels]
    body: dict[int, list[str]] = {oid: [] for oid in oids}
    for rel, name, type_sql, notnull, default, ident, generated, coll in conn.execute(
            text(_COLUMNS), {"oids": oids}).all():
        line = f"column {title_name(name)} {type_sql}"
        if coll:
            line += f" collate {coll}"
        if notnull:
            line += " not null"
        if ident:
            line += f" generated {'always' if ident == 'a' else 'by default'} as identity"
        elif generated:
            line += f" generated always as {default} stored"
        elif default is not None:
            line += f" default {default}"
        body[int(rel)].append(line)
    for rel, name, definition in conn.execute(text(_CONSTRAINTS), {"oids": oids}).all():
        body[int(rel)].append(f"constraint {title_name(name)} {definition}")
    for rel, name, definition in conn.execute(text(_INDEXES), {"oids": oids}).all():
        m = _INDEX_DEF.match(definition)
        shown = (f"{'unique ' if m.group('unique') else ''}using {m.group('rest')}" if m
                 else definition)
        body[int(rel)].append(f"index {title_name(name)} {shown}")
    for rel, name, definition in conn.execute(text(_TRIGGERS), {"oids": oids}).all():
        body[int(rel)].append(f"trigger {title_name(name)} {definition}")
    out: list[str] = []
    for oid, schema, name, kind in rels:
        out.append(f"{_KINDS[kind]} {_name(schema, name)}")
        out.extend(INDENT + line for line in body[int(oid)])
        if kind in ("v", "m"):
            definition = conn.execute(text("SELECT pg_get_viewdef(CAST(:oid AS oid), true)"),
                                      {"oid": int(oid)}).scalar()
            out.extend(INDENT + "as " + ln.strip() for ln in str(definition).splitlines()
                       if ln.strip())
    for kind, schema, name, detail in conn.execute(text(_OTHERS)).all():
        out.append(f"{kind} {_name(schema, name)}" + (f": {detail}" if detail else ""))
    return SchemaState("\n".join(out) if out else "empty schema")
