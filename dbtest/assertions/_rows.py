"""Row assertions: how many rows a table holds, and which.

>>> dbtest.assert_row_count(db, "users", 2, where="email LIKE '%@x.io'")     # doctest: +SKIP
>>> dbtest.assert_rows(db, "users", [{"email": "a@x.io", "username": "a"}])  # doctest: +SKIP

Both take a ``Session``, ``Connection`` or ``Engine``; with an ``AsyncSession`` /
``AsyncConnection`` / ``AsyncEngine`` they return an awaitable (``await
dbtest.assert_rows(async_db, ...)``). A failure raises :class:`~dbtest.errors.DbAssertionError`
whose message shows the expected and the actual rows as tables, differing cells marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, overload

from dbtest.assertions import _render
from dbtest.assertions._db import (
    INTERNAL_OPTION,
    TableInfo,
    connection_of,
    pg_dialect,
    resolve_table,
    run,
    split_name,
)
from dbtest.errors import ConfigError, DbAssertionError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from sqlalchemy import Connection, FromClause
    from sqlalchemy.sql.elements import ColumnElement

    from dbtest.assertions._db import AsyncDb, SyncDb

__all__ = ["assert_row_count", "assert_rows"]

_ANY: Any = _render.MISSING  # a key absent from an expected row matches anything


@overload
def assert_row_count(db: SyncDb, table: Any, n: int, *, where: Any = None) -> None: ...
@overload
def assert_row_count(db: AsyncDb, table: Any, n: int, *, where: Any = None
                     ) -> Awaitable[None]: ...
def assert_row_count(db: Any, table: Any, n: int, *, where: Any = None) -> Any:
    """Fail unless ``table`` holds exactly ``n`` rows (matching ``where``).

    ``table`` is a name (``"users"``, ``"shop.orders"``), a ``Table`` or a mapped class.
    ``where`` is SQL text, a SQLAlchemy expression (``User.email.like("%@x.io")``) or a
    mapping ``{column: value}``. The failure message lists the rows that are there.
    Returns an awaitable for async handles.
    """
    __tracebackhide__ = True
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"assert_row_count(): n must be a count (int >= 0), got {n!r}. "
                          f"Pass 0 or more.")
    return run(db, partial(_row_count, table=table, n=n, where=where),
               helper="assert_row_count")


@overload
def assert_rows(db: SyncDb, table: Any, expected: Sequence[Mapping[str, Any]], *,
                exact: bool = False, order_matters: bool = False, where: Any = None) -> None: ...
@overload
def assert_rows(db: AsyncDb, table: Any, expected: Sequence[Mapping[str, Any]], *,
                exact: bool = False, order_matters: bool = False, where: Any = None
                ) -> Awaitable[None]: ...
def assert_rows(db: Any, table: Any, expected: Sequence[Mapping[str, Any]], *,
                exact: bool = False, order_matters: bool = False, where: Any = None) -> Any:
    """Fail unless ``table`` holds the ``expected`` rows.

    Each expected row is a mapping of column -> value and is compared on those columns only
    (with ``==``, so ``unittest.mock.ANY`` works). By default the expected rows must be a
    subset of the table's rows, in any order; ``exact=True`` also forbids other rows;
    ``order_matters=True`` compares in primary-key order (exact: position by position;
    subset: the expected rows appear in that order). ``where`` narrows the table as in
    :func:`assert_row_count`. Returns an awaitable for async handles.
    """
    __tracebackhide__ = True
    if isinstance(expected, Mapping | str) or not isinstance(expected, Sequence):
        raise ConfigError("assert_rows(): expected must be a list of mappings "
                          f"(column -> value), got {type(expected).__name__}.")
    for i, row in enumerate(expected):
        if not isinstance(row, Mapping):
            raise ConfigError(f"assert_rows(): expected[{i}] must be a mapping of column -> "
                              f"value, got {row!r}.")
    return run(db, partial(_rows, table=table, expected=list(expected), exact=exact,
                           order_matters=order_matters, where=where),
               helper="assert_rows")


# -- the work ------------------------------------------------------------------------------
def _row_count(db: Any, table: Any, n: int, where: Any) -> None:
    __tracebackhide__ = True
    from sqlalchemy import func, select

    conn = connection_of(db)
    info = resolve_table(conn, table, helper="assert_row_count")
    source, criterion = _filter(info, table, where, helper="assert_row_count")
    stmt = select(func.count()).select_from(source)
    if criterion is not None:
        stmt = stmt.where(criterion)
    count = _guarded(conn, lambda: conn.execute(_internal(stmt)).scalar_one(), where,
                     helper="assert_row_count")
    if count == n:
        return
    headers, rows = _fetch_rows(conn, info, source, criterion, info.columns, order=True)
    scope = f" where {_describe(where)}" if where is not None else ""
    body = _render.table(headers, rows, limit=None) if rows else "  (no rows)"
    if count > len(rows):
        body += f"\n  ... {count - len(rows)} more row(s)"
    raise DbAssertionError(f"assert_row_count: expected {n} row(s) in {info.display}{scope}, "
                           f"found {count}:\n{body}")


def _rows(db: Any, table: Any, expected: list[Mapping[str, Any]], exact: bool,
          order_matters: bool, where: Any) -> None:
    __tracebackhide__ = True
    conn = connection_of(db)
    info = resolve_table(conn, table, helper="assert_rows")
    wanted = {k for row in expected for k in row}
    for key in wanted:
        if not isinstance(key, str):
            raise ConfigError(f"assert_rows(): column names must be strings, got {key!r}.")
    info.check_columns(sorted(wanted), helper="assert_rows")
    columns = [c for c in info.columns if c in wanted]
    if order_matters and not info.primary_key:
        raise ConfigError(f"assert_rows(): order_matters=True orders by primary key, and "
                          f"{info.display!r} has none. Compare without order_matters.")
    source, criterion = _filter(info, table, where, helper="assert_rows")
    fetch = list(dict.fromkeys([*info.primary_key, *columns]))
    headers, rows = _guarded(conn, lambda: _fetch_rows(conn, info, source, criterion, fetch,
                                                       order=True, limit=None),
                             where, helper="assert_rows")
    pick = [headers.index(c) for c in columns]
    key_at = [headers.index(c) for c in info.primary_key]
    actual = [tuple(r[i] for i in pick) for r in rows]
    keys = [", ".join(f"{c}={_render.fmt(r[i])}" for c, i in zip(info.primary_key, key_at,
                                                                  strict=True)) for r in rows]
    want = [tuple(row.get(c, _ANY) for c in columns) for row in expected]
    if order_matters:
        pairs, missing, extra = _match_ordered(want, actual, exact)
    else:
        pairs, missing, extra = _match_any_order(want, actual)
    if not missing and not (exact and extra):
        return
    raise DbAssertionError(_rows_message(info, columns, want, actual, keys, missing,
                                         extra if exact else [], exact, order_matters, where,
                                         headers, rows, pairs))


def _internal(stmt: Any) -> Any:
    return stmt.execution_options(**{INTERNAL_OPTION: True})


def _filter(info: TableInfo, table: Any, where: Any, *, helper: str
            ) -> tuple[FromClause, ColumnElement[bool] | None]:
    """The FROM to select from and the WHERE criterion for ``where``."""
    from sqlalchemy import Table, and_, text
    from sqlalchemy.sql.elements import ClauseElement
    from sqlalchemy.sql.util import find_tables

    real = getattr(table, "__table__", table)
    source: FromClause = real if isinstance(real, Table) else info.clause()
    if where is None:
        return source, None
    if isinstance(where, str):
        return source, text(where)  # type: ignore[return-value]
    if isinstance(where, Mapping):
        info.check_columns(list(where), helper=helper)
        return source, and_(*(source.c[k].is_(None) if v is None else source.c[k] == v
                              for k, v in where.items()))
    if isinstance(where, ClauseElement):
        # an ORM/Core expression names its own Table: select FROM that one, or the
        # statement would list the table twice
        for found in find_tables(where, check_columns=True):
            if split_name(found, helper=helper) in ((info.schema, info.name), (None, info.name)):
                return found, where  # type: ignore[return-value]
        return source, where  # type: ignore[return-value]
    raise ConfigError(f"{helper}(): where must be SQL text, a SQLAlchemy expression or a "
                      f"mapping of column -> value, got {type(where).__name__}.")


def _guarded(conn: Connection, fn: Any, where: Any, *, helper: str) -> Any:
    """Run ``fn``; user SQL in ``where`` runs in a savepoint so an error leaves the test's
    transaction usable, and becomes a ConfigError that quotes the clause."""
    if where is None or isinstance(where, Mapping):
        return fn()
    from sqlalchemy.exc import DBAPIError

    try:
        with conn.begin_nested():
            return fn()
    except DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(f"{helper}(): where={_describe(where)!r} failed: {detail}. Fix the "
                          f"condition (column names, quoting).") from None


def _fetch_rows(conn: Connection, info: TableInfo, source: FromClause,
                criterion: ColumnElement[bool] | None, columns: Sequence[str], *, order: bool,
                limit: int | None = _render.MAX_ROWS
                ) -> tuple[list[str], list[tuple[Any, ...]]]:
    from sqlalchemy import literal_column, select

    cols = [source.c[c] for c in columns] if columns else [literal_column("1")]
    stmt = select(*cols).select_from(source)
    if criterion is not None:
        stmt = stmt.where(criterion)
    if order and info.primary_key:
        stmt = stmt.order_by(*(source.c[c] for c in info.primary_key))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = [tuple(r) for r in conn.execute(_internal(stmt))]
    return list(columns), rows


def _describe(where: Any) -> str:
    if isinstance(where, str):
        return where
    if isinstance(where, Mapping):
        return " AND ".join(f"{k} = {_render.fmt(v)}" for k, v in where.items())
    try:
        return str(where.compile(dialect=pg_dialect(),
                                 compile_kwargs={"literal_binds": True}))
    except Exception:  # values without a literal form: show placeholders instead
        return str(where)


# -- matching ------------------------------------------------------------------------------
def _same(want: Any, have: Any) -> bool:
    return want is _ANY or bool(want == have)


def _fits(want: tuple[Any, ...], have: tuple[Any, ...]) -> bool:
    return all(_same(w, h) for w, h in zip(want, have, strict=True))


def _match_any_order(want: list[tuple[Any, ...]], actual: list[tuple[Any, ...]]
                     ) -> tuple[dict[int, int], list[int], list[int]]:
    """A maximum matching expected -> actual (Kuhn's augmenting paths), so a loose expected
    row never takes the only actual row a stricter one could match."""
    fits = [[j for j, have in enumerate(actual) if _fits(w, have)] for w in want]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in sorted(range(len(want)), key=lambda k: len(fits[k])):
        augment(i, set())
    pairs = {i: j for j, i in owner.items()}
    missing = [i for i in range(len(want)) if i not in pairs]
    extra = [j for j in range(len(actual)) if j not in owner]
    return pairs, missing, extra


def _match_ordered(want: list[tuple[Any, ...]], actual: list[tuple[Any, ...]], exact: bool
                   ) -> tuple[dict[int, int], list[int], list[int]]:
    if exact:
        pairs = {i: i for i in range(min(len(want), len(actual))) if _fits(want[i], actual[i])}
        missing = [i for i in range(len(want)) if i not in pairs]
        extra = [j for j in range(len(actual)) if j not in pairs.values()]
        return pairs, missing, extra
    pairs, j = {}, 0  # earliest match first: optimal for a subsequence test
    for i, w in enumerate(want):
        while j < len(actual) and not _fits(w, actual[j]):
            j += 1
        if j == len(actual):
            break
        pairs[i], j = j, j + 1
    missing = [i for i in range(len(want)) if i not in pairs]
    return pairs, missing, [j for j in range(len(actual)) if j not in pairs.values()]


def _rows_message(info: TableInfo, columns: list[str], want: list[tuple[Any, ...]],
                  actual: list[tuple[Any, ...]], keys: list[str], missing: list[int],
                  extra: list[int], exact: bool, order_matters: bool, where: Any,
                  headers: list[str], rows: list[tuple[Any, ...]], pairs: dict[int, int]) -> str:
    mode = ("exact" if exact else "subset") + (", primary-key order" if order_matters
                                               else ", any order")
    scope = f" where {_describe(where)}" if where is not None else ""
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(want)} expected row(s) not found")
    if extra:
        problems.append(f"{len(extra)} unexpected row(s)")
    lines = [f"assert_rows: {info.display}{scope} ({mode}): {' and '.join(problems)}."]
    out: list[list[Any]] = []
    labels: list[str] = []
    marks: list[tuple[int, int]] = []
    free = [j for j in range(len(actual)) if j not in pairs.values()]
    for i in missing:
        out.append(list(want[i]))
        labels.append(f"expected[{i}]")
        # the unmatched actual row agreeing on most cells shows what differs
        at = i if order_matters and exact and i < len(actual) else _closest(want[i], actual, free)
        if at is None:
            labels[-1] += " (table has no rows)"
            continue
        diff = [k for k, (w, h) in enumerate(zip(want[i], actual[at], strict=True))
                if not _same(w, h)]
        marks.extend((len(out) - 1, k) for k in diff)
        out.append(list(actual[at]))
        labels.append(f"  actual {keys[at]}" if keys[at] else "  closest actual")
        marks.extend((len(out) - 1, k) for k in diff)
    for j in extra:
        out.append(list(actual[j]))
        labels.append(f"unexpected {keys[j]}".rstrip())
    lines.append(_render.table(columns, out, marked=marks, prefixes=labels, limit=None))
    lines.append(f"rows in {info.display}{scope} ({len(rows)}"
                 f"{', by primary key' if info.primary_key else ''}):")
    lines.append(_render.table(headers, rows) if rows else "  (no rows)")
    return "\n".join(lines)


def _closest(want: tuple[Any, ...], actual: list[tuple[Any, ...]], free: list[int]
             ) -> int | None:
    pool = free or list(range(len(actual)))
    if not pool:
        return None
    return max(pool, key=lambda j: sum(_same(w, h) for w, h in zip(want, actual[j],
                                                                   strict=True)))
