"""Values as text: the SQL that reads each column as canonical text, and the tokens shown.

Every value is turned into text by PostgreSQL itself, so psycopg and asyncpg give the
same snapshot: timestamps in UTC (ISO 8601, ``Z``), numerics with their scale, bytea
in hex, json with sorted keys. Strings are shown JSON-quoted (``"a"``, ``""``), NULL
bare, everything else bare unless it would break the line format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring as _encode_string
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dbtest.state._catalog import Table

__all__ = ["MASKED", "NULL", "PLAIN_KINDS", "SEP", "column_expr", "column_sql", "fetch_all",
           "format_column", "formatter", "quote_ident", "quote_token", "read_rows",
           "split_tokens"]

NULL = "NULL"
MASKED = "<masked>"
SEP = " | "
_BARE_OK = re.compile(r'^[^\s"|\x00-\x1f\x7f](?:[^|\x00-\x1f\x7f]*[^\s|\x00-\x1f\x7f])?$')

_TS_FORMAT = "'YYYY-MM-DD\"T\"HH24:MI:SS.US'"


def quote_ident(conn: Connection, name: str) -> str:
    """A quoted SQL identifier (SQLAlchemy's quoting, always quoted)."""
    return conn.dialect.identifier_preparer.quote_identifier(name)


def column_sql(ref: str, kind: str) -> str:
    """SQL reading the column ``ref`` (already quoted) as canonical text."""
    if kind in ("tstz", "ts"):
        # ISO 8601 in UTC, fractional seconds without trailing zeros
        value = f"{ref} AT TIME ZONE 'UTC'" if kind == "tstz" else ref
        zulu = " || 'Z'" if kind == "tstz" else ""
        return (f"CASE WHEN isfinite({ref}) THEN rtrim(rtrim(to_char({value}, {_TS_FORMAT}), "
                f"'0'), '.'){zulu} ELSE {ref}::text END")
    if kind == "date":
        return (f"CASE WHEN isfinite({ref}) THEN to_char({ref}, 'YYYY-MM-DD') "
                f"ELSE {ref}::text END")
    if kind == "bytea":
        return f"'\\x' || encode({ref}, 'hex')"
    return f"{ref}::text"


def column_expr(col: Any, kind: str) -> Any:
    """:func:`column_sql` as a SQLAlchemy expression over the column object ``col``."""
    from sqlalchemy import Text, case, cast, func, literal

    if kind in ("tstz", "ts"):
        value = func.timezone("UTC", col) if kind == "tstz" else col
        shown: Any = func.rtrim(func.rtrim(func.to_char(value, 'YYYY-MM-DD"T"HH24:MI:SS.US'), "0"),
                           ".")
        if kind == "tstz":
            shown = shown + literal("Z", Text)
        return case((func.isfinite(col), shown), else_=cast(col, Text))
    if kind == "date":
        return case((func.isfinite(col), func.to_char(col, "YYYY-MM-DD")),
                    else_=cast(col, Text))
    if kind == "bytea":
        return literal("\\x", Text) + func.encode(col, "hex")
    return cast(col, Text)


def quote_token(text: str) -> str:
    """``text`` as a JSON string literal (the form every string value takes)."""
    return _encode_string(text)


def bare_or_quoted(text: str) -> str:
    """``text`` bare when the line format allows it, else quoted."""
    return text if _BARE_OK.match(text) and text not in (NULL, MASKED) else _encode_string(text)


_JSON_OUT = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
_JSON_IN = json.JSONDecoder()


def _fmt_json(raw: str) -> str:
    try:
        value = _JSON_IN.decode(raw)
    except ValueError:
        return bare_or_quoted(raw)
    return bare_or_quoted(_JSON_OUT.encode(value))


_FORMATTERS: dict[str, Callable[[str], str]] = {
    "string": quote_token,
    "json": _fmt_json,
    "other": bare_or_quoted,
}
#: kinds whose canonical text never needs quoting: numbers, booleans, uuids, timestamps...
PLAIN_KINDS = frozenset({"plain", "tstz", "ts", "date", "bytea"})


def formatter(kind: str) -> Callable[[str], str] | None:
    """The token function for non-NULL raw text of a column of ``kind`` (``None``: the
    text is shown as it is)."""
    if kind in PLAIN_KINDS:
        return None
    return _FORMATTERS.get(kind, bare_or_quoted)


def format_column(values: Sequence[str | None], fmt: Callable[[str], str] | None
                  ) -> list[str]:
    """Tokens of one column's raw values (column-wise: no call per cell when plain)."""
    if fmt is None:
        return [NULL if v is None else v for v in values]
    return [NULL if v is None else fmt(v) for v in values]


def read_rows(conn: Connection, table: Table, order: Sequence[str],
              tiebreak: bool) -> list[tuple[str | None, ...]]:
    """Every row of ``table`` as raw canonical text, ordered by ``order``.

    ``tiebreak`` appends every column's text to the ORDER BY, so rows equal in ``order``
    still come in one stable order.
    """
    q = [quote_ident(conn, c.name) for c in table.columns]
    # ORDER BY names the table's own columns through the alias: a bare "id" would be the
    # output column "id"::text, and ids would sort as text (1, 10, 2...)
    by = {c.name: f"t.{ref}" for c, ref in zip(table.columns, q, strict=True)}
    order_sql = [by[name] for name in order]
    if tiebreak:
        order_sql += [f"t.{ref}::text" for ref in q]
    rel = f"{quote_ident(conn, table.schema)}.{quote_ident(conn, table.name)}"
    exprs = ", ".join(column_sql(r, c.kind) for r, c in zip(q, table.columns, strict=True))
    sql = f"SELECT {exprs} FROM {rel} AS t"
    if order_sql:
        sql += f" ORDER BY {', '.join(order_sql)}"
    if not table.columns:
        sql = f"SELECT FROM {rel}"
    return fetch_all(conn, sql)


def fetch_all(conn: Connection, sql: str) -> list[tuple[str | None, ...]]:
    """Rows of ``sql`` through the DBAPI cursor: no SQLAlchemy row objects for 10k rows
    of text, and none of the statement events that query counters listen to."""
    # the caller's catalog queries already began the transaction SQLAlchemy tracks
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if rows and type(rows[0]) is not tuple:  # asyncpg records
        return [tuple(r) for r in rows]
    return list(rows)


def read_keys(conn: Connection, table: Table, order: Sequence[str]) -> list[str]:
    """The primary key text of ``table``'s rows in ``order`` (for labels of referenced rows)."""
    pk = quote_ident(conn, table.pk[0])
    rel = f"{quote_ident(conn, table.schema)}.{quote_ident(conn, table.name)}"
    order_sql = ", ".join(f"t.{quote_ident(conn, n)}" for n in order)  # see read_rows
    kind = table.column(table.pk[0]).kind
    return [r[0] for r in conn.exec_driver_sql(
        f"SELECT {column_sql(pk, kind)} FROM {rel} AS t ORDER BY {order_sql}").all()]


def split_tokens(line: str) -> list[str]:
    """Split a row line on `` | ``, keeping quoted tokens (which may contain it) whole."""
    tokens: list[str] = []
    decoder = json.JSONDecoder()
    pos, end = 0, len(line)
    while pos <= end:
        if line.startswith('"', pos):
            try:
                _, stop = decoder.raw_decode(line, pos)
            except ValueError:
                stop = line.find(SEP, pos)
                stop = end if stop < 0 else stop
            # a quoted token may be followed by more text (e.g. ' -> "b"'): take it too
            nxt = line.find(SEP, stop)
            stop = end if nxt < 0 else nxt
        else:
            stop = line.find(SEP, pos)
            stop = end if stop < 0 else stop
        tokens.append(line[pos:stop])
        pos = stop + len(SEP)
    return tokens
