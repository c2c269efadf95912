"""SQL semantics in Python: the five aggregates, NULL-aware operators, value comparison.

Written for :func:`dbtest.assert_aggregate`, which recomputes a query's aggregates from its
underlying rows. The rules follow PostgreSQL: aggregates skip NULLs; ``count`` of nothing
is 0 while ``sum`` / ``avg`` / ``min`` / ``max`` of nothing are NULL; integer division
truncates toward zero; comparisons with NULL are unknown and ``AND`` / ``OR`` use
three-valued logic.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

__all__ = ["AGGREGATES", "KNOWN_AGGREGATES", "aggregate", "binary", "cast_value", "close",
           "logic_and", "logic_not", "logic_or", "round_value"]

AGGREGATES = ("count", "sum", "avg", "min", "max")
"""The aggregates recomputed in Python."""

KNOWN_AGGREGATES = frozenset({
    *AGGREGATES, "array_agg", "string_agg", "bool_and", "bool_or", "every", "bit_and",
    "bit_or", "bit_xor", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg",
    "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "mode",
    "percentile_cont", "percentile_disc", "corr", "covar_pop", "covar_samp", "regr_avgx",
    "regr_avgy", "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx",
    "regr_sxy", "regr_syy", "xmlagg", "range_agg", "range_intersect_agg", "any_value",
})
"""Every aggregate PostgreSQL ships, to tell an aggregate query from a plain one."""

# numeric division gets more digits than PostgreSQL shows; comparison allows for rounding
_CONTEXT = Context(prec=40)


def aggregate(name: str, values: Sequence[Any], *, star: bool = False,
              distinct: bool = False) -> Any:
    """``name`` over ``values`` (the rows that passed FILTER), as PostgreSQL computes it."""
    if star:
        return len(values)
    present = [v for v in values if v is not None]
    if distinct:
        present = list(dict.fromkeys(present))
    if name == "count":
        return len(present)
    if not present:
        return None
    if name == "min":
        return min(present)
    if name == "max":
        return max(present)
    total = present[0]
    for value in present[1:]:
        total = total + value
    if name == "sum":
        return total
    # avg: numeric for integers and numerics, double for floats, interval for intervals
    if isinstance(total, float):
        return total / len(present)
    if isinstance(total, int | Decimal):
        return _CONTEXT.divide(Decimal(total), Decimal(len(present)))
    return total / len(present)


def _div(a: Any, b: Any) -> Any:
    if b == 0:
        raise ZeroDivisionError("division by zero")
    if isinstance(a, int) and isinstance(b, int):
        quotient = abs(a) // abs(b)  # integer division truncates toward zero
        return quotient if (a >= 0) == (b >= 0) else -quotient
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return _CONTEXT.divide(Decimal(a), Decimal(b))
    return a / b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        return a - b * _div(a, b)  # the sign follows the dividend, as in SQL
    return Decimal(a) % Decimal(b)


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
    "gt": operator.gt, "ge": operator.ge, "add": operator.add, "sub": operator.sub,
    "mul": operator.mul, "truediv": _div, "div": _div, "floordiv": _div, "mod": _mod,
}


def binary(op_name: str) -> Callable[[Any, Any], Any] | None:
    """The NULL-propagating Python form of the SQL operator named ``op_name``."""
    fn = _BINARY.get(op_name)
    if fn is None:
        return None

    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if (isinstance(a, Decimal) and isinstance(b, float)) or \
                (isinstance(a, float) and isinstance(b, Decimal)):
            a, b = float(a), float(b)
        return fn(a, b)

    return apply


def logic_and(values: Sequence[Any]) -> bool | None:
    """Three-valued AND."""
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def logic_or(values: Sequence[Any]) -> bool | None:
    """Three-valued OR."""
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def logic_not(value: Any) -> bool | None:
    """Three-valued NOT."""
    return None if value is None else not value


def cast_value(value: Any, kind: str) -> Any:
    """``CAST(value AS kind)`` for kind ``integer`` / ``numeric`` / ``float`` / ``text``."""
    if value is None:
        return None
    if kind == "integer":
        # PostgreSQL rounds numerics half away from zero when casting to integer
        return int(Decimal(str(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if kind == "numeric":
        return value if isinstance(value, Decimal) else Decimal(str(value))
    if kind == "float":
        return float(value)
    return str(value)


def round_value(value: Any, digits: Any) -> Any:
    """``round(value, digits)``: half away from zero, as PostgreSQL rounds numerics."""
    if value is None or digits is None:
        return None
    if isinstance(value, float) and digits == 0:
        return float(round(value))  # round(double precision) rounds half to even
    quantum = Decimal(1).scaleb(-int(digits))
    rounded = Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_UP)
    return float(rounded) if isinstance(value, float) else rounded


def close(sql: Any, py: Any) -> bool:
    """Whether the SQL value and the recomputed one agree (within the SQL value's rounding)."""
    if sql is None or py is None:
        return sql is None and py is None
    if isinstance(sql, float) or isinstance(py, float):
        try:
            return math.isclose(float(sql), float(py), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if isinstance(sql, Decimal) and isinstance(py, int | Decimal):
        if sql == py:
            return True
        exponent = sql.as_tuple().exponent
        if not isinstance(exponent, int):  # NaN / Infinity
            return False
        return abs(sql - Decimal(py)) <= Decimal(1).scaleb(exponent)
    return bool(sql == py)
