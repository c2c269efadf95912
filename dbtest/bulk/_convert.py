"""Value conversions per column type: asyncpg's binary COPY wants exact Python types."""

from __future__ import annotations

import enum
import json
import operator
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbtest.bulk._plan import DbColumn

__all__ = ["asyncpg_converter", "convert_columns", "enum_name"]


def asyncpg_converter(col: DbColumn) -> Any:
    """A function making a value acceptable to asyncpg's binary COPY, or ``None``."""
    if col.typname in ("json", "jsonb"):
        return json.dumps
    if col.category == "E":
        return enum_name
    if col.typname == "numeric":
        return _to_decimal
    if col.typname in ("timestamp", "timestamptz"):
        return _to_datetime
    if col.typname == "date":
        return _to_date
    if col.typname in ("time", "timetz"):
        return _to_time
    if col.category == "S":
        return _to_str
    return None


def convert_columns(values: list[Any], converters: list[Any]) -> list[Any]:
    """``values`` with ``converters`` (one per column, or None) applied; a column whose
    values already have an accepted type is skipped (one pass in C, much cheaper than a
    call per value), and rows are copied only when some column needs converting."""
    needed = []
    for pos, fn in enumerate(converters):
        if fn is None:
            continue
        accepted = _ACCEPTS.get(fn)
        if accepted is not None and \
                set(map(type, map(operator.itemgetter(pos), values))) <= accepted:
            continue
        needed.append((pos, fn))
    if not needed:
        return values
    out = [list(v) for v in values] if values and isinstance(values[0], tuple) else values
    for pos, fn in needed:
        for v in out:
            x = v[pos]
            if x is not None:
                v[pos] = fn(x)
    return out


def enum_name(value: Any) -> Any:
    return value.name if isinstance(value, enum.Enum) else value


def _to_decimal(value: Any) -> Any:
    return Decimal(repr(value)) if isinstance(value, float) else (
        Decimal(value) if isinstance(value, str) else value)


def _to_datetime(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value


def _to_date(value: Any) -> Any:
    if isinstance(value, str):
        return date.fromisoformat(value)
    return value.date() if isinstance(value, datetime) else value


def _to_time(value: Any) -> Any:
    return time.fromisoformat(value) if isinstance(value, str) else value


def _to_str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    return value.name if isinstance(value, enum.Enum) else str(value)


_NONE = type(None)
_ACCEPTS: dict[Any, set[type]] = {
    _to_str: {str, _NONE}, enum_name: {str, _NONE}, _to_datetime: {datetime, _NONE},
    _to_date: {date, _NONE}, _to_time: {time, _NONE}, _to_decimal: {Decimal, int, _NONE},
}
