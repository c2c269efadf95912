"""Aggregate queries checked against an independent computation in Python.

>>> q = (select(User.username, func.count(Post.id))
...      .outerjoin(Post, Post.author_id == User.id).group_by(User.username))
>>> dbtest.assert_aggregate(db, q)                                 # doctest: +SKIP
>>> dbtest.assert_aggregate(db, q, expected={("alice",): 3, ("bob",): 0})   # doctest: +SKIP

Without ``expected``, the query runs as written, and a second query fetches its underlying
rows: the same FROM / JOIN / WHERE, no GROUP BY / HAVING, selecting the group-by expressions,
each aggregate's argument and FILTER condition. Python then groups those rows, computes
``count`` / ``sum`` / ``avg`` / ``min`` / ``max`` (``DISTINCT`` and ``FILTER (WHERE ...)``
included) with SQL's NULL rules, applies HAVING, and reports the groups whose values differ.
Expressions around aggregates (``coalesce``, ``round``, arithmetic, comparisons, ``CAST``) are
evaluated in Python too; expressions without aggregates are taken from the rows as SQL
computed them. Other aggregates (``string_agg``, ...), window functions, ``DISTINCT``,
``LIMIT`` and ``OFFSET`` are refused with a clear error; the ``expected=`` form takes any
aggregate query.

A group is identified by its values in the non-aggregate output columns, in order
(``("alice",)``; ``()`` for a query without GROUP BY). With ``expected=``, the value is the
aggregate output column's value, or a tuple of them when there are several.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, overload

from dbtest.assertions import _aggmath as am
from dbtest.assertions import _render
from dbtest.assertions._aggplan import Plan, evaluate, sql_text
from dbtest.assertions._db import INTERNAL_OPTION, connection_of, run
from dbtest.errors import ConfigError, DbAssertionError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from dbtest.assertions._db import AnySelect, AsyncDb, SyncDb

__all__ = ["AggregateReport", "assert_aggregate"]

Key = tuple[Any, ...]


@dataclass
class AggregateReport:
    """What :func:`assert_aggregate` compared: output names, groups from SQL and the other
    side (recomputed in Python, or ``expected``), and the number of underlying rows."""

    key_columns: list[str]
    value_columns: list[str]
    sql: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    other: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    underlying_rows: int | None = None


@overload
def assert_aggregate(db: SyncDb, query: AnySelect, expected: Mapping[Any, Any] | None = None
                     ) -> AggregateReport: ...
@overload
def assert_aggregate(db: AsyncDb, query: AnySelect, expected: Mapping[Any, Any] | None = None
                     ) -> Awaitable[AggregateReport]: ...
def assert_aggregate(db: Any, query: Any, expected: Mapping[Any, Any] | None = None) -> Any:
    """Check an aggregate ``select()`` against Python (or against ``expected``).

    ``db`` is a ``Session``, ``Connection`` or ``Engine`` (sync or async; async handles give
    an awaitable). ``expected`` maps group key tuple -> aggregate value (a tuple when the
    query has several aggregate columns). Returns an :class:`AggregateReport`.
    """
    __tracebackhide__ = True
    from sqlalchemy import Select

    if not isinstance(query, Select):
        raise ConfigError(f"assert_aggregate(): the query must be a SQLAlchemy select(), got "
                          f"{type(query).__name__}; SQL text cannot be taken apart into its "
                          f"groups and aggregates. Build it with select(...).")
    plan = Plan(query)
    if expected is not None and not isinstance(expected, Mapping):
        raise ConfigError(f"assert_aggregate(): expected maps group key tuple -> value, got "
                          f"{type(expected).__name__}.")
    if expected is None:
        plan.check_recomputable()
    return run(db, partial(_check, plan=plan, expected=expected), helper="assert_aggregate")


def _check(db: Any, plan: Plan, expected: Mapping[Any, Any] | None) -> AggregateReport:
    __tracebackhide__ = True
    from sqlalchemy.orm import Session

    if isinstance(db, Session):
        db.flush()  # what Session.execute would autoflush
    conn = connection_of(db)
    report = AggregateReport([plan.names[i] for i in plan.key_at],
                             [plan.names[i] for i in plan.value_at])
    sql_rows = [tuple(r) for r in conn.execute(plan.query)]
    sql: list[tuple[Key, tuple[Any, ...]]] = [
        (tuple(r[i] for i in plan.key_at), tuple(r[i] for i in plan.value_at))
        for r in sql_rows]
    if expected is not None:
        other = _normalize_expected(expected, len(plan.value_at))
        if len({k for k, _ in sql}) != len(sql):
            raise ConfigError("assert_aggregate(): the query returns several rows with the same "
                              "group key; add the GROUP BY columns to the select to tell them "
                              "apart.")
        report.sql, report.other = dict(sql), other
        _compare(report, list(other.items()), sql, "expected", plan, [], plan.query)
        return report
    base = _base_query(plan)
    under = [tuple(r) for r in conn.execute(base.execution_options(**{INTERNAL_OPTION: True}))]
    groups: dict[Key, list[tuple[Any, ...]]] = {}
    if not plan.group:
        groups[()] = under  # one group, even over no rows
    for row in under if plan.group else ():
        groups.setdefault(tuple(row[i] for i in plan.group), []).append(row)
    python: list[tuple[Key, tuple[Any, ...]]] = []
    for rows in groups.values():
        if plan.having is not None and evaluate(plan.having, rows) is not True:
            continue
        out = [evaluate(n, rows) for n in plan.outputs]
        python.append((tuple(out[i] for i in plan.key_at), tuple(out[i] for i in plan.value_at)))
    report.sql, report.other = dict(sql), dict(python)
    report.underlying_rows = len(under)
    _compare(report, python, sql, "python", plan, under, base)
    return report


def _base_query(plan: Plan) -> Any:
    q = plan.query
    cols = [c.label(f"c{i}") for i, c in enumerate(plan.base)] or [_one()]
    base = q.with_only_columns(*cols, maintain_column_froms=True)
    base = base.group_by(None).order_by(None)
    base._having_criteria = ()  # no public way to drop HAVING from a copy
    return base


def _one() -> Any:
    from sqlalchemy import literal_column

    return literal_column("1").label("c0")


def _normalize_expected(expected: Mapping[Any, Any], width: int) -> dict[Key, tuple[Any, ...]]:
    out: dict[Key, tuple[Any, ...]] = {}
    for key, value in expected.items():
        k = key if isinstance(key, tuple) else (key,)
        if width == 1:
            v = value if isinstance(value, tuple) and len(value) == 1 else (value,)
        elif isinstance(value, tuple) and len(value) == width:
            v = value
        else:
            raise ConfigError(f"assert_aggregate(): the query has {width} aggregate columns, so "
                              f"expected[{key!r}] must be a tuple of {width} values, got "
                              f"{value!r}.")
        out[k] = v
    return out


def _compare(report: AggregateReport, other: list[tuple[Key, tuple[Any, ...]]],
             sql: list[tuple[Key, tuple[Any, ...]]], label: str, plan: Plan,
             under: list[tuple[Any, ...]], base: Any) -> None:
    __tracebackhide__ = True
    pending = list(sql)
    rows: list[list[Any]] = []
    marks: list[tuple[int, int]] = []
    nk, nv = len(report.key_columns), len(report.value_columns)
    bad: list[Key] = []
    for key, want in other:
        at = next((i for i, (k, v) in enumerate(pending) if k == key and _agree(v, want)),
                  None)
        if at is None:
            at = next((i for i, (k, _) in enumerate(pending) if k == key), None)
        have = pending.pop(at)[1] if at is not None else (_render.MISSING,) * nv
        if at is not None and _agree(have, want):
            continue
        bad.append(key)
        row = list(key)
        for j in range(nv):
            row += [have[j], want[j]]
            if have[j] is _render.MISSING or not am.close(have[j], want[j]):
                marks += [(len(rows), nk + 2 * j), (len(rows), nk + 2 * j + 1)]
        rows.append(row)
    for key, have in pending:  # groups only SQL has
        bad.append(key)
        row = list(key)
        for j in range(nv):
            row += [have[j], _render.MISSING]
            marks += [(len(rows), nk + 2 * j), (len(rows), nk + 2 * j + 1)]
        rows.append(row)
    if not rows:
        return
    headers = [*report.key_columns]
    for name in report.value_columns:
        headers += [f"{name} (sql)", f"{name} ({label})"]
    total = len(set(k for k, _ in other) | set(k for k, _ in sql))
    source = ("the expected values" if label == "expected" else
              f"the same aggregates recomputed in Python from {len(under)} underlying row(s)")
    lines = [f"assert_aggregate: {len(rows)} of {total} group(s) differ between the SQL result "
             f"and {source}:", _render.table(headers, rows, marked=marks, limit=None)]
    if label == "python" and under:
        picked = [r for r in under if not plan.group or tuple(r[i] for i in plan.group)
                  in _group_keys_of(bad, plan, under)]
        lines.append("underlying rows of those groups:")
        lines.append(_render.table([_short(sql_text(c)) for c in plan.base] or ["1"], picked))
    lines.append(f"query: {_short(sql_text(plan.query), 300)}")
    raise DbAssertionError("\n".join(lines))


def _agree(have: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    return all(am.close(h, w) for h, w in zip(have, want, strict=True))


def _group_keys_of(keys: list[Key], plan: Plan, under: list[tuple[Any, ...]]) -> set[Key]:
    """GROUP BY values of the underlying rows whose output key is among ``keys``."""
    found: set[Key] = set()
    groups: dict[Key, list[tuple[Any, ...]]] = {}
    for row in under:
        groups.setdefault(tuple(row[i] for i in plan.group), []).append(row)
    for gkey, rows in groups.items():
        out = [evaluate(n, rows) for n in plan.outputs]
        if tuple(out[i] for i in plan.key_at) in keys:
            found.add(gkey)
    return found


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
