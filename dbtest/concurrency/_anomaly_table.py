"""The two rows the anomaly checks play with: on the user's table, or a throwaway one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbtest.errors import ConcurrencyError

__all__ = ["PreparedTable", "prepared_table"]


@dataclass(frozen=True)
class PreparedTable:
    """Identifiers and keys to render the checks' SQL templates with."""

    label: str
    table: sql.Composable
    key: sql.Identifier
    value: sql.Identifier
    keys: tuple[Any, Any]
    start: tuple[int, int]

    def render(self, template: str) -> sql.Composed:
        """``{t} {k} {v} {x} {y}`` in ``template`` -> quoted identifiers and key literals."""
        return sql.SQL(template).format(t=self.table, k=self.key, v=self.value,
                                        x=sql.Literal(self.keys[0]),
                                        y=sql.Literal(self.keys[1]))

    @property
    def reset(self) -> sql.Composed:
        """Set row x to 10 and row y to 20 (run before every check)."""
        return sql.SQL("; ").join(
            sql.SQL("UPDATE {} SET {} = {} WHERE {} = {}").format(
                self.table, self.value, sql.Literal(start), self.key, sql.Literal(key))
            for key, start in zip(self.keys, self.start, strict=True))


def _columns(conn: psycopg.Connection[Any], regclass: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT a.attname, t.typcategory FROM pg_attribute a "
        "JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        (regclass,)).fetchall()
    return {str(name): str(category) for name, category in rows}


@contextmanager
def prepared_table(conninfo: str, table: str | None, key: str, value: str,
                   keys: tuple[Any, Any] | None, throwaway: str,
                   start: tuple[int, int]) -> Iterator[PreparedTable]:
    """Check the user's table (or create a throwaway one); restore (or drop) it after."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if table is None:
            ident = sql.Identifier(throwaway)
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, value int NOT NULL)")
                         .format(ident))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s), (2, %s)").format(ident), start)
            try:
                yield PreparedTable("a throwaway table", ident, sql.Identifier("id"),
                                    sql.Identifier("value"), (1, 2), start)
            finally:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            return
        ident = sql.Identifier(*table.split("."))
        regclass = ident.as_string(conn)
        row = conn.execute("SELECT to_regclass(%s)::text", (regclass,)).fetchone()
        if row is None or row[0] is None:
            raise ConcurrencyError(f"anomaly checks: table {table!r} does not exist in this "
                                   f"database; pass table='schema.name' of an existing table")
        columns = _columns(conn, regclass)
        for role, column in (("key", key), ("value", value)):
            if column not in columns:
                raise ConcurrencyError(f"anomaly checks: table {table!r} has no column "
                                       f"{column!r} (passed as {role}=); columns: "
                                       f"{', '.join(sorted(columns))}")
        if columns[value] != "N":
            raise ConcurrencyError(f"anomaly checks: column {value!r} of {table!r} is not "
                                   f"numeric; pass value= a numeric column (it is set to "
                                   f"{start[0]} and {start[1]} during the checks)")
        k, v = sql.Identifier(key), sql.Identifier(value)
        if keys is None:
            found = [r[0] for r in conn.execute(sql.SQL(
                "SELECT {} FROM {} ORDER BY 1 LIMIT 2").format(k, ident)).fetchall()]
            if len(found) < 2:
                raise ConcurrencyError(f"anomaly checks need two rows in {table!r}, found "
                                       f"{len(found)}; insert two rows or omit table= to use "
                                       f"a throwaway table")
            keys = (found[0], found[1])
        originals = conn.execute(sql.SQL("SELECT {}, {} FROM {} WHERE {} IN (%s, %s)")
                                 .format(k, v, ident, k), keys).fetchall()
        if len(originals) != 2:
            raise ConcurrencyError(f"anomaly checks: keys {keys!r} do not name two rows of "
                                   f"{table!r} (found {len(originals)})")
        try:
            yield PreparedTable(f"{table} ({key}={keys[0]!r}, {keys[1]!r}; column {value})",
                                ident, k, v, (keys[0], keys[1]), start)
        finally:
            for row_key, original in originals:
                conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                    ident, v, k), (original, row_key))
