"""What a bulk insert writes: the target table, its catalog columns, the rows grouped by
the columns they carry, and database errors turned into :class:`SeedError`."""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbtest.errors import SeedError

__all__ = ["CATALOG_SQL", "BulkPlan", "DbColumn", "Group", "Target", "describe_error",
           "plan_rows", "resolve_target"]

# one query: the table's columns with their types (no rows: the table does not exist)
CATALOG_SQL = """
SELECT a.attname, t.typname, t.typcategory, coalesce(et.typname, ''), a.attnotnull,
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', a.attgenerated <> ''
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class DbColumn:
    """A column as the database sees it."""

    name: str
    typname: str  # int4, jsonb, _text (arrays start with _), mood (an enum)...
    category: str  # pg_type.typcategory: N numeric, S string, D date/time, E enum, A array...
    element: str
    not_null: bool
    has_default: bool
    generated: bool


@dataclass(frozen=True)
class _PerRow:
    """A Python default evaluated for each row."""

    fn: Any


@dataclass
class Target:
    """The table to load, and what SQLAlchemy knows of it (when given a model or Table)."""

    name: str
    schema: str | None = None
    table: Any = None  # sqlalchemy Table
    keys: dict[str, str] = field(default_factory=dict)  # ORM attribute key -> column name

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def regclass(self) -> str:
        quoted = '"' + self.name.replace('"', '""') + '"'
        if self.schema:
            return '"' + self.schema.replace('"', '""') + '".' + quoted
        return quoted


@dataclass
class Group:
    """Rows carrying the same columns: one COPY."""

    db_columns: list[DbColumn]
    values: list[Any]  # one list or tuple per row
    indexes: list[int]  # position of each row in the caller's rows


@dataclass
class BulkPlan:
    target: Target
    groups: list[Group]
    rows: list[Mapping[str, Any]]


def resolve_target(table_or_model: Any) -> Target:
    """A :class:`Target` from a mapped class, a ``Table`` or ``"schema.table"``."""
    if isinstance(table_or_model, str):
        schema, _, name = table_or_model.rpartition(".")
        return Target(name=name, schema=schema or None)
    from sqlalchemy import Table

    if isinstance(table_or_model, Table):
        return Target(table_or_model.name, table_or_model.schema, table_or_model)
    from sqlalchemy import inspect
    from sqlalchemy.exc import NoInspectionAvailable

    try:
        mapper = inspect(table_or_model)
    except NoInspectionAvailable:
        raise SeedError(f"bulk_insert: {table_or_model!r} is not a table: pass a mapped class, "
                        f"a sqlalchemy Table or a table name") from None
    table = getattr(mapper, "local_table", None)
    if table is None or not isinstance(table, Table):
        raise SeedError(f"bulk_insert: {table_or_model!r} does not map a single table")
    keys = {prop.key: prop.columns[0].name for prop in mapper.column_attrs
            if prop.columns[0].table is table}
    return Target(table.name, table.schema, table, keys)


def _column_default(sa_column: Any) -> tuple[bool, Any]:
    default = getattr(sa_column, "default", None)
    if default is None or not (getattr(default, "is_scalar", False)
                               or getattr(default, "is_callable", False)):
        return False, None
    if default.is_scalar:
        return True, default.arg
    fn = default.arg

    def call() -> Any:  # called per row, like SQLAlchemy does (uuid4, now...)
        try:
            return fn(None)
        except Exception as exc:
            raise SeedError(f"bulk_insert: the Python default of column {sa_column.name!r} "
                            f"needs an execution context ({exc}); give the value in the "
                            f"rows") from None

    return True, _PerRow(call)


def plan_rows(target: Target, catalog: Sequence[Sequence[Any]], rows: Iterable[Any],
              columns: Sequence[str] | None, dialect: Any) -> BulkPlan:
    """Validate ``rows`` against the table and group them for COPY."""
    if not catalog:
        raise SeedError(f"bulk_insert: table {target.display!r} does not exist in this "
                        f"database. Apply the schema first (migrations) or fix the name.")
    # asyncpg returns the "char" typcategory as bytes
    db_cols = {r[0]: DbColumn(*_decoded(r)) for r in catalog}
    rows_list = _as_mappings(rows, columns, target)
    # rows are grouped by the keys they carry (usually one group): checks, defaults and
    # conversions are worked out once per group, values are taken with itemgetter
    by_keys: dict[tuple[str, ...], list[int]] = {}
    for index, row in enumerate(rows_list):
        keys = tuple(row)
        found = by_keys.get(keys)
        if found is None:
            by_keys[keys] = [index]
        else:
            found.append(index)
    all_names: dict[str, None] = {}
    for keys in by_keys:
        for key in keys:
            all_names.setdefault(target.keys.get(key, key))
    unknown = [n for n in all_names if n not in db_cols]
    if unknown:
        raise SeedError(f"bulk_insert into {target.display}: unknown column(s) "
                        f"{', '.join(map(repr, unknown))}; the table has "
                        f"{', '.join(db_cols)}. Rename or drop those keys in the rows.")
    generated = [n for n in all_names if db_cols[n].generated and not db_cols[n].has_default]
    if generated:
        raise SeedError(f"bulk_insert into {target.display}: column(s) {generated} are "
                        f"generated by the database; leave them out of the rows")
    processors = _sa_processors(target, all_names, dialect)
    defaults = _python_defaults(target, all_names, len(by_keys) > 1)
    merged: dict[tuple[str, ...], Group] = {}
    for keys, indexes in by_keys.items():
        names = [target.keys.get(k, k) for k in keys]
        extra = {n: v for n, v in defaults.items() if n not in names}
        # a row lacking a column other rows have: NULL, unless the column has a server
        # default (then the row goes to a COPY without that column, so the default applies)
        nulls = [n for n in all_names if n not in names and n not in extra
                 and not db_cols[n].has_default]
        present = [*names, *extra, *nulls]
        tail = [*extra.values(), *([None] * len(nulls))]
        mutate = bool(tail) or any(processors.get(n) for n in present)
        getter = operator.itemgetter(*keys) if keys else None
        values: list[Any]
        if len(keys) > 1 and not mutate:  # the common case: tuples straight from C
            values = list(map(getter, map(rows_list.__getitem__, indexes)))  # type: ignore[arg-type]
        elif len(keys) == 1:
            values = [[getter(rows_list[i])] for i in indexes]  # type: ignore[misc]
        elif keys:
            values = [list(getter(rows_list[i])) for i in indexes]  # type: ignore[misc]
        else:
            values = [[] for _ in indexes]
        if any(isinstance(t, _PerRow) for t in tail):
            for v in values:
                v.extend(t.fn() if isinstance(t, _PerRow) else t for t in tail)
        elif tail:
            for v in values:
                v.extend(tail)
        for pos, name in enumerate(present):
            proc = processors.get(name)
            if proc is not None:
                for v in values:
                    if v[pos] is not None:
                        v[pos] = proc(v[pos])
        signature = tuple(sorted(present))
        group = merged.get(signature)
        if group is None:
            merged[signature] = Group([db_cols[n] for n in present], values, list(indexes))
        else:  # same columns in another key order: align to the group's order
            order = [present.index(c.name) for c in group.db_columns]
            group.values.extend([v[p] for p in order] for v in values)
            group.indexes.extend(indexes)
    return BulkPlan(target, list(merged.values()), rows_list)


def _decoded(row: Sequence[Any]) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in row]


def _as_mappings(rows: Iterable[Any], columns: Sequence[str] | None,
                 target: Target) -> list[Mapping[str, Any]]:
    rows = rows if isinstance(rows, list) else list(rows)
    if all(type(row) is dict for row in rows):  # the common case, without ABC checks
        return rows
    out: list[Mapping[str, Any]] = []
    for number, row in enumerate(rows, 1):
        if isinstance(row, Mapping):
            out.append(row)
        elif columns is not None and isinstance(row, Sequence) and not isinstance(row, str):
            if len(row) != len(columns):
                raise SeedError(f"bulk_insert into {target.display}: row {number} has "
                                f"{len(row)} values for {len(columns)} columns")
            out.append(dict(zip(columns, row, strict=True)))
        else:
            raise SeedError(f"bulk_insert into {target.display}: row {number} is a "
                            f"{type(row).__name__}; pass mappings (or sequences with "
                            f"columns=[...])")
    return out


def _python_defaults(target: Target, names: dict[str, None], mixed: bool) -> dict[str, Any]:
    if target.table is None:
        return {}
    defaults = {}
    for col in target.table.columns:
        if col.name not in names or mixed:
            has, value = _column_default(col)
            if has:
                defaults[col.name] = value
    return defaults


def _sa_processors(target: Target, names: Iterable[str], dialect: Any) -> dict[str, Any]:
    # TypeDecorator and Enum columns: the value the database stores is what SQLAlchemy
    # would bind, so ask the type (Enum members -> their stored label, custom types...)
    if target.table is None:
        return {}
    from sqlalchemy import Enum as SaEnum
    from sqlalchemy.types import TypeDecorator

    if dialect is None:
        from sqlalchemy.dialects.postgresql import psycopg

        dialect = psycopg.dialect()  # type: ignore[no-untyped-call]
    out = {}
    for name in names:
        col = target.table.columns.get(name)
        if col is None:
            continue
        typ = col.type
        if isinstance(typ, TypeDecorator):
            out[name] = _decorator(typ, dialect)
        elif isinstance(typ, SaEnum) and typ.enum_class is not None:
            proc = typ.bind_processor(dialect)  # type: ignore[no-untyped-call]
            if proc is not None:
                out[name] = proc
    return out


def _decorator(typ: Any, dialect: Any) -> Any:
    return lambda value: typ.process_bind_param(value, dialect)


# -- errors --------------------------------------------------------------------------------
_LINE = re.compile(r"COPY [^,]+, line (\d+)")
_COLUMN = re.compile(r"line \d+, column ([^:]+):")
_KEY = re.compile(r"Key \((.+?)\)=\((.*?)\)")


def _diag(exc: Any) -> dict[str, Any]:
    diag = getattr(exc, "diag", None)
    if diag is not None:  # psycopg
        return {"constraint": diag.constraint_name, "column": diag.column_name,
                "context": diag.context or "", "detail": diag.message_detail or "",
                "message": diag.message_primary or str(exc), "sqlstate": diag.sqlstate}
    return {"constraint": getattr(exc, "constraint_name", None),  # asyncpg
            "column": getattr(exc, "column_name", None),
            "context": getattr(exc, "context", None) or "",
            "detail": getattr(exc, "detail", None) or "",
            "message": getattr(exc, "message", None) or str(exc),
            "sqlstate": getattr(exc, "sqlstate", None)}


def describe_error(exc: BaseException, target: Target, plan: BulkPlan, group: Group,
                   index: int | None) -> SeedError:
    """A :class:`SeedError` naming the table, the row (1-based) and the constraint."""
    d = _diag(exc)
    row_pos: int | None = None
    match = _LINE.search(d["context"])
    if match:
        line = int(match.group(1))
        if 1 <= line <= len(group.indexes):
            row_pos = group.indexes[line - 1]
    if row_pos is None:
        row_pos = _row_by_key(d["detail"], plan, group)
    if row_pos is None and index is not None and d["sqlstate"] is None:
        row_pos = group.indexes[index] if index < len(group.indexes) else None
    where = f"row {row_pos + 1}" if row_pos is not None else "a row"
    what = d["message"].strip().splitlines()[0] if d["message"] else type(exc).__name__
    parts = [f"bulk_insert into {target.display}: {where} failed: {what}"]
    if d["constraint"]:
        parts.append(f"constraint {d['constraint']!r}")
    column = d["column"]
    if column is None:
        cm = _COLUMN.search(d["context"])
        column = cm.group(1) if cm else None
    if column:
        parts.append(f"column {column!r}")
    if d["detail"]:
        parts.append(d["detail"].strip())
    if row_pos is not None:
        parts.append(f"row: {_short(plan.rows[row_pos])}")
    return SeedError("; ".join(parts) + ". Nothing was inserted: fix that row (or the "
                     "constraint) and insert again.")


def _row_by_key(detail: str, plan: BulkPlan, group: Group) -> int | None:
    # foreign keys are checked at the end of the COPY: find the row by the key it names
    match = _KEY.search(detail)
    if not match:
        return None
    cols = [c.strip().strip('"') for c in match.group(1).split(",")]
    vals = [v.strip() for v in match.group(2).split(",")]
    names = [c.name for c in group.db_columns]
    if len(cols) != len(vals) or any(c not in names for c in cols):
        return None
    positions = [names.index(c) for c in cols]
    for row_values, index in zip(group.values, group.indexes, strict=True):
        if all(str(row_values[p]) == v for p, v in zip(positions, vals, strict=True)):
            return index
    return None


def _short(row: Mapping[str, Any]) -> str:
    text = repr(dict(row))
    return text if len(text) <= 300 else text[:297] + "..."
