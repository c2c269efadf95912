"""Taking an aggregate ``select()`` apart for :func:`dbtest.assert_aggregate`.

Each output column (and HAVING) becomes a small tree: aggregates computed in Python over
*base columns* (expressions the underlying-rows query selects: group-by keys, aggregate
arguments, FILTER conditions, non-aggregate sub-expressions), and the operators around them
evaluated in Python with SQL's NULL rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest.assertions import _aggmath as am
from dbtest.assertions._db import pg_dialect
from dbtest.errors import ConfigError

if TYPE_CHECKING:
    from dbtest.assertions._db import AnySelect

__all__ = ["Plan", "evaluate", "sql_text"]


@dataclass
class _Agg:
    name: str
    arg: int | None  # base column of the argument; None for count(*)
    distinct: bool
    filter: int | None  # base column of the FILTER condition


class Plan:
    """The query's outputs as trees over base columns and Python-computed aggregates."""

    def __init__(self, query: AnySelect) -> None:
        from sqlalchemy import FromClause
        from sqlalchemy.sql.functions import FunctionElement

        self.query = query
        self.base: list[Any] = []
        self.unsupported: str | None = None
        raw = getattr(query, "_raw_columns", [])
        if any(isinstance(c, FromClause) and not isinstance(c, FunctionElement) for c in raw):
            raise ConfigError("assert_aggregate(): select columns and aggregates, not whole "
                              "entities (select(User.name, func.count(Post.id)), not "
                              "select(User, ...)).")
        columns = list(query.selected_columns)
        self.names = [str(k) for k in query.selected_columns.keys()]  # noqa: SIM118
        has_agg = [_contains_aggregate(c) for c in columns]
        having = list(getattr(query, "_having_criteria", ()))
        if not any(has_agg) and not any(_contains_aggregate(h) for h in having):
            raise ConfigError("assert_aggregate(): the query computes no aggregate (count, "
                              "sum, avg, min, max, ...) in its columns; it is not an aggregate "
                              "query. Use assert_rows() for plain rows.")
        self.key_at = [i for i, agg in enumerate(has_agg) if not agg]
        self.value_at = [i for i, agg in enumerate(has_agg) if agg]
        self.group = [self._base(_unlabel(g)) for g in query._group_by_clauses]
        self.outputs = [self._node(c) for c in columns]
        self.having = self._node(_and(having)) if having else None

    def check_recomputable(self) -> None:
        q = self.query
        if self.unsupported:
            raise ConfigError(f"assert_aggregate(): cannot recompute {self.unsupported} in "
                              f"Python. Compare with expected= instead, or split the column.")
        for what, present in (("LIMIT", q._limit_clause is not None),
                              ("OFFSET", q._offset_clause is not None),
                              ("DISTINCT", bool(q._distinct))):
            if present:
                raise ConfigError(f"assert_aggregate(): the query has {what}, which applies to "
                                  f"the groups after aggregation; remove it to recompute, or "
                                  f"compare with expected=.")

    def _base(self, expr: Any) -> int:
        from sqlalchemy import TextClause

        if isinstance(expr, TextClause):
            self.unsupported = self.unsupported or f"the textual GROUP BY {str(expr)!r}"
        for i, have in enumerate(self.base):
            if have is expr or have.compare(expr):
                return i
        self.base.append(expr)
        return len(self.base) - 1

    def _node(self, expr: Any) -> Any:
        from sqlalchemy import Null, True_
        from sqlalchemy.sql import elements, functions

        expr = _unlabel(expr)
        if not _contains_aggregate(expr):
            if isinstance(expr, elements.BindParameter):
                return ("const", expr.effective_value)
            if isinstance(expr, Null):
                return ("const", None)
            if isinstance(expr, True_ | elements.False_):
                return ("const", isinstance(expr, True_))
            return ("col", self._base(expr))
        if isinstance(expr, elements.FunctionFilter):
            agg = self._aggregate(expr.func)
            if agg is not None:
                agg.filter = self._base(expr.criterion)
            return ("agg", agg)
        if isinstance(expr, elements.Over | elements.WithinGroup):
            return self._refuse(expr, "a window or ordered-set function")
        if isinstance(expr, functions.FunctionElement):
            name = _fname(expr)
            if name in am.KNOWN_AGGREGATES:
                return ("agg", self._aggregate(expr))
            if name == "coalesce":
                return ("coalesce", [self._node(a) for a in expr.clauses.clauses])
            if name == "round" and 1 <= len(expr.clauses.clauses) <= 2:
                args = [self._node(a) for a in expr.clauses.clauses]
                return ("round", args[0], args[1] if len(args) > 1 else ("const", 0))
            return self._refuse(expr, f"the function {name}() around an aggregate")
        if isinstance(expr, elements.Cast):
            kind = _cast_kind(expr.type)
            if kind is None:
                return self._refuse(expr, f"CAST to {expr.type}")
            return ("cast", kind, self._node(expr.clause))
        if isinstance(expr, elements.BooleanClauseList | elements.ClauseList):
            op = getattr(expr.operator, "__name__", "")
            kind = {"and_": "and", "or_": "or"}.get(op)
            if kind is None:
                return self._refuse(expr, f"the operator {op}")
            return (kind, [self._node(c) for c in expr.clauses])
        if isinstance(expr, elements.UnaryExpression) and \
                getattr(expr.operator, "__name__", "") == "inv":
            return ("not", self._node(expr.element))
        if isinstance(expr, elements.BinaryExpression):
            op = getattr(expr.operator, "__name__", "")
            if op in ("is_", "is_not"):
                return (op, self._node(expr.left), self._node(expr.right))
            fn = am.binary(op)
            if fn is None:
                return self._refuse(expr, f"the operator {op}")
            return ("op", fn, self._node(expr.left), self._node(expr.right))
        return self._refuse(expr, type(expr).__name__)

    def _refuse(self, expr: Any, what: str) -> Any:
        self.unsupported = self.unsupported or f"{what} in {sql_text(expr)!r}"
        return ("const", None)

    def _aggregate(self, fn: Any) -> _Agg | None:
        from sqlalchemy.sql import elements, operators

        name = _fname(fn)
        if name not in am.AGGREGATES:
            self.unsupported = self.unsupported or (
                f"the aggregate {name}() (supported: {', '.join(am.AGGREGATES)})")
            return None
        args = list(fn.clauses.clauses)
        if len(args) > 1:
            self.unsupported = self.unsupported or f"{name}() with {len(args)} arguments"
            return None
        if not args or _is_star(args[0]):
            return _Agg(name, None, False, None)
        arg, distinct = args[0], False
        if isinstance(arg, elements.UnaryExpression) and arg.operator is operators.distinct_op:
            arg, distinct = arg.element, True
        return _Agg(name, self._base(_unlabel(arg)), distinct, None)


def _unlabel(expr: Any) -> Any:
    from sqlalchemy.sql import elements

    while isinstance(expr, elements.Label | elements.Grouping):
        expr = expr.element
    return expr


def _and(clauses: list[Any]) -> Any:
    from sqlalchemy import and_

    return clauses[0] if len(clauses) == 1 else and_(*clauses)


def _fname(fn: Any) -> str:
    return str(getattr(fn, "name", "")).lower()


def _is_star(arg: Any) -> bool:
    from sqlalchemy.sql import elements

    return isinstance(arg, elements.ColumnClause) and arg.is_literal and arg.name == "*"


def _cast_kind(type_: Any) -> str | None:
    from sqlalchemy import Float, Integer, Numeric, String

    for cls, kind in ((Integer, "integer"), (Float, "float"), (Numeric, "numeric"),
                      (String, "text")):
        if isinstance(type_, cls):
            return kind
    return None


def _contains_aggregate(expr: Any) -> bool:
    """Whether ``expr`` calls an aggregate of *this* query (subqueries are not entered)."""
    from sqlalchemy.sql import elements, functions, selectable

    todo = [expr]
    while todo:
        node = todo.pop()
        if isinstance(node, elements.Over):
            return True
        if isinstance(node, functions.FunctionElement):
            if _fname(node) in am.KNOWN_AGGREGATES:
                return True
        elif isinstance(node, selectable.SelectBase | selectable.ScalarSelect
                        | selectable.FromClause):
            continue  # a subquery's aggregates are not this query's
        todo.extend(node.get_children())
    return False


def sql_text(expr: Any) -> str:
    for kwargs in ({"compile_kwargs": {"literal_binds": True}}, {}):
        try:
            return str(expr.compile(dialect=pg_dialect(), **kwargs))
        except Exception:  # a value without a literal form, or an element alone
            continue
    return str(expr)


def evaluate(node: Any, rows: list[Any]) -> Any:
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "col":
        return rows[0][node[1]] if rows else None
    if kind == "agg":
        agg: _Agg = node[1]
        chosen = rows if agg.filter is None else [r for r in rows if r[agg.filter] is True]
        values = [r[agg.arg] for r in chosen] if agg.arg is not None else list(chosen)
        return am.aggregate(agg.name, values, star=agg.arg is None, distinct=agg.distinct)
    if kind == "coalesce":
        return next((v for v in (evaluate(n, rows) for n in node[1]) if v is not None), None)
    if kind == "cast":
        return am.cast_value(evaluate(node[2], rows), node[1])
    if kind == "round":
        return am.round_value(evaluate(node[1], rows), evaluate(node[2], rows))
    if kind == "and":
        return am.logic_and([evaluate(n, rows) for n in node[1]])
    if kind == "or":
        return am.logic_or([evaluate(n, rows) for n in node[1]])
    if kind == "not":
        return am.logic_not(evaluate(node[1], rows))
    if kind in ("is_", "is_not"):
        same = evaluate(node[1], rows) == evaluate(node[2], rows)
        return same if kind == "is_" else not same
    return node[1](evaluate(node[2], rows), evaluate(node[3], rows))  # "op"
