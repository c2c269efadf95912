"""Counting the SQL statements a block of code sends, and catching N+1 queries.

>>> with dbtest.count_queries(db) as queries:                     # doctest: +SKIP
...     list_posts(db)
>>> queries.count, queries.statements                              # doctest: +SKIP
>>> with dbtest.assert_max_queries(db, 3): ...                     # doctest: +SKIP
>>> dbtest.assert_constant_queries(db, run, setup=make_posts, sizes=[1, 10])  # doctest: +SKIP

Statements are seen through SQLAlchemy's ``before_cursor_execute`` event on the engine
behind ``db`` (a Session bound to the test's connection leads to that connection's engine),
so every connection of that engine counts during the block; an ``executemany`` (or one
batch of an ``insertmanyvalues`` insert) is one statement. Not counted: ``SAVEPOINT``,
``RELEASE SAVEPOINT`` and ``ROLLBACK TO SAVEPOINT`` (dbtest's isolation issues them around
every ``commit()``; the application's own ``begin_nested()`` ones are skipped alike) and the
catalog queries of dbtest's own helpers. ``BEGIN`` / ``COMMIT`` / ``ROLLBACK`` are not
statements for the driver and never appear.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from dbtest.assertions import _render
from dbtest.assertions._db import INTERNAL_OPTION, is_async
from dbtest.errors import ConfigError, DbAssertionError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["CapturedQuery", "QueryCounter", "assert_constant_queries", "assert_max_queries",
           "assert_num_queries", "count_queries"]

_SAVEPOINT = re.compile(r"^\s*(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+TO\s+SAVEPOINT)\b",
                        re.IGNORECASE)
_SHOWN = 50


@dataclass(frozen=True)
class CapturedQuery:
    """One statement as the driver received it."""

    statement: str
    parameters: Any
    executemany: bool


def _engine_of(db: Any, helper: str) -> Any:
    """The sync ``Engine`` whose connections ``db`` uses."""
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

    target = db
    if is_async(db):
        target = getattr(db, "sync_session", None) or getattr(db, "sync_engine", None)
    if isinstance(target, Session):
        target = target.get_bind()
    if isinstance(target, Connection):
        return target.engine
    if isinstance(target, Engine):
        return target
    raise ConfigError(f"{helper}() needs a Session, Connection or Engine (sync or async), got "
                      f"{type(db).__name__}. Pass the db fixture.")


class QueryCounter:
    """The statements sent during a ``with`` (or ``async with``) block.

    ``count`` and ``statements`` (SQL text) are live during the block and final after it;
    ``queries`` has the parameters too.
    """

    _helper = "count_queries"

    def __init__(self, db: Any) -> None:
        self._engine = _engine_of(db, self._helper)
        self.queries: list[CapturedQuery] = []
        self._listening = False

    @property
    def count(self) -> int:
        """How many statements were sent."""
        return len(self.queries)

    @property
    def statements(self) -> list[str]:
        """The SQL text of each statement, in order."""
        return [q.statement for q in self.queries]

    def _on_execute(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                    context: Any, executemany: bool) -> None:
        if context is not None and context.execution_options.get(INTERNAL_OPTION):
            return
        if _SAVEPOINT.match(statement):
            return
        self.queries.append(CapturedQuery(statement, parameters, executemany))

    def start(self) -> None:
        """Begin counting (what ``__enter__`` does)."""
        from sqlalchemy import event

        if not self._listening:
            event.listen(self._engine, "before_cursor_execute", self._on_execute)
            self._listening = True

    def stop(self) -> None:
        """Stop counting (what ``__exit__`` does)."""
        from sqlalchemy import event

        if self._listening:
            event.remove(self._engine, "before_cursor_execute", self._on_execute)
            self._listening = False

    def check(self) -> None:
        """Called after a block that raised nothing; the assertion subclasses fail here."""

    def __enter__(self) -> QueryCounter:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        __tracebackhide__ = True
        self.stop()
        if exc_type is None:
            self.check()

    async def __aenter__(self) -> QueryCounter:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        __tracebackhide__ = True
        self.__exit__(exc_type, exc, tb)

    def listing(self, limit: int = _SHOWN) -> str:
        """The statements, numbered, one per line (long ones shortened)."""
        lines = [f"  {i}. {_one_line(s)}" for i, s in enumerate(self.statements[:limit], 1)]
        if self.count > limit:
            lines.append(f"  ... {self.count - limit} more")
        return "\n".join(lines) if lines else "  (none)"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} count={self.count}>"


class _Bounded(QueryCounter):
    def __init__(self, db: Any, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{self._helper}(): the number of queries must be an int >= 0, "
                              f"got {n!r}. Pass 0 or more.")
        super().__init__(db)
        self.limit = n

    def _fail(self, wanted: str) -> None:
        __tracebackhide__ = True
        raise DbAssertionError(f"{self._helper}: expected {wanted} {self.limit} quer"
                               f"{'y' if self.limit == 1 else 'ies'}, {self.count} "
                               f"{'was' if self.count == 1 else 'were'} executed:\n"
                               f"{self.listing()}\n  (SAVEPOINT / RELEASE / ROLLBACK TO "
                               f"statements are not counted)")


class assert_max_queries(_Bounded):
    """``with dbtest.assert_max_queries(db, n):`` fails if the block sends more than ``n``
    statements, listing them."""

    _helper = "assert_max_queries"

    def check(self) -> None:
        __tracebackhide__ = True
        if self.count > self.limit:
            self._fail("at most")


class assert_num_queries(_Bounded):
    """``with dbtest.assert_num_queries(db, n):`` fails unless the block sends exactly ``n``
    statements, listing them."""

    _helper = "assert_num_queries"

    def check(self) -> None:
        __tracebackhide__ = True
        if self.count != self.limit:
            self._fail("exactly")


def count_queries(db: Any) -> QueryCounter:
    """``with dbtest.count_queries(db) as queries:`` counts the statements of the block
    (``queries.count``, ``queries.statements``); ``async with`` works too."""
    return QueryCounter(db)


def _one_line(sql: str, width: int = 160) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- N+1 -----------------------------------------------------------------------------------
@overload
def assert_constant_queries(db: Session | Connection, run: Callable[[], Any], *,
                            setup: Callable[[int], Any], sizes: Sequence[int] = (1, 5, 20)
                            ) -> dict[int, int]: ...
@overload
def assert_constant_queries(db: AsyncSession | AsyncConnection, run: Callable[[], Any], *,
                            setup: Callable[[int], Any], sizes: Sequence[int] = (1, 5, 20)
                            ) -> Awaitable[dict[int, int]]: ...
def assert_constant_queries(db: Any, run: Callable[[], Any], *, setup: Callable[[int], Any],
                            sizes: Sequence[int] = (1, 5, 20)) -> Any:
    """Fail when the number of statements ``run()`` sends grows with the data (N+1).

    For each ``n`` in ``sizes``: open a savepoint, call ``setup(n)`` (not counted) to create
    ``n`` rows, expire the session (so ``run`` loads everything as a new request would),
    count the statements of ``run()``, roll the savepoint back. The counts must all be
    equal; otherwise the failure shows them per size and which statements repeat. With an
    ``AsyncSession`` / ``AsyncConnection``, ``setup`` and ``run`` may be coroutine functions
    and the call returns an awaitable. Returns ``{n: count}``.
    """
    __tracebackhide__ = True
    checked = _sizes(sizes)
    if not callable(run) or not callable(setup):
        raise ConfigError("assert_constant_queries(): run and setup must be callables: "
                          "setup(n) creates n rows, run() is the code under test.")
    if is_async(db):
        return _constant_async(db, run, setup, checked)
    counts: dict[int, QueryCounter] = {}
    session = _session(db)
    for n in checked:
        savepoint = db.begin_nested()
        try:
            setup(n)
            if session is not None:
                session.flush()
                session.expire_all()
            with count_queries(db) as counter:
                run()
            counts[n] = counter
        finally:
            savepoint.rollback()
    return _judge(counts)


async def _constant_async(db: Any, run: Callable[[], Any], setup: Callable[[int], Any],
                          sizes: list[int]) -> dict[int, int]:
    __tracebackhide__ = True
    counts: dict[int, QueryCounter] = {}
    session = db if hasattr(db, "sync_session") else None
    for n in sizes:
        savepoint = await db.begin_nested()
        try:
            await _maybe_await(setup(n))
            if session is not None:
                await session.flush()
                session.expire_all()
            with count_queries(db) as counter:
                await _maybe_await(run())
            counts[n] = counter
        finally:
            await savepoint.rollback()
    return _judge(counts)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _session(db: Any) -> Any:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    if isinstance(db, Session):
        return db
    if isinstance(db, Connection):
        return None
    raise ConfigError(f"assert_constant_queries() needs a Session or Connection (sync or "
                      f"async), got {type(db).__name__}. Pass the db fixture.")


def _sizes(sizes: Sequence[int]) -> list[int]:
    checked = sorted(set(sizes)) if isinstance(sizes, Sequence) else []
    if len(checked) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 0
                               for n in checked):
        raise ConfigError(f"assert_constant_queries(): sizes must hold at least two different "
                          f"row counts (ints >= 0), got {sizes!r}.")
    return checked


def _judge(counts: dict[int, QueryCounter]) -> dict[int, int]:
    __tracebackhide__ = True
    result = {n: c.count for n, c in counts.items()}
    if len(set(result.values())) == 1:
        return result
    sizes = list(counts)
    small, large = counts[sizes[0]], counts[sizes[-1]]
    per_size = _render.table(["rows", "queries"], [[n, c] for n, c in result.items()],
                             limit=None)
    few, many = Counter(_one_line(s) for s in small.statements), Counter(
        _one_line(s) for s in large.statements)
    grown: list[list[Any]] = sorted(
        ([few[s], many[s], _render.Cell(s)] for s in many if many[s] > few[s]),
        key=lambda r: int(r[0]) - int(r[1]))
    growth = _render.table([f"times at {sizes[0]} rows", f"at {sizes[-1]} rows", "statement"],
                           grown, limit=10)
    raise DbAssertionError(f"assert_constant_queries: the number of queries grows with the "
                           f"data (N+1?):\n{per_size}\nstatements that repeat more with more "
                           f"rows:\n{growth}\nall {large.count} statements at {sizes[-1]} "
                           f"rows:\n{large.listing(limit=12)}")
