"""`run_concurrently`: n workers, each with its own connection, released at one barrier.

::

    results = run_concurrently(lambda i, conn: insert_row(conn, i), 10, url=fresh_db.url)

Sync functions run in threads, ``async def`` functions as tasks (then ``await`` the call).
Connections are opened before the barrier, so the workers really start together.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from dbtest.concurrency._target import conninfo_for, describe_error, sqlalchemy_url_for
from dbtest.errors import ConcurrencyError

__all__ = ["WorkerError", "WorkerResults", "run_concurrently"]

T = TypeVar("T")


class WorkerResults(Sequence[T], Generic[T]):
    """Results in worker order; a failed worker's slot holds its exception.

    (Failed slots exist only with ``return_exceptions=True``; otherwise a failure
    raises :class:`WorkerError`.)
    """

    def __init__(self, values: list[Any], exceptions: list[BaseException | None],
                 elapsed: float = 0.0) -> None:
        self.values = values
        self.exceptions = exceptions
        #: seconds from the barrier's release to the last worker's end
        self.elapsed = elapsed

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        return self.values[index]

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[T]:
        return iter(self.values)

    @property
    def failed(self) -> list[int]:
        """Indexes of the workers that raised."""
        return [i for i, exc in enumerate(self.exceptions) if exc is not None]

    @property
    def succeeded(self) -> list[int]:
        """Indexes of the workers that returned."""
        return [i for i, exc in enumerate(self.exceptions) if exc is None]

    @property
    def ok(self) -> bool:
        """No worker raised."""
        return not self.failed

    def __repr__(self) -> str:
        shown = [f"<{type(v).__name__}>" if self.exceptions[i] is not None else repr(v)
                 for i, v in enumerate(self.values)]
        return f"WorkerResults([{', '.join(shown)}])"


class WorkerError(ConcurrencyError):
    """Some workers raised; ``.exceptions`` maps worker index to its exception.

    The exception group of all worker exceptions is the ``__cause__``, so pytest shows
    each worker's traceback.
    """

    def __init__(self, message: str, results: WorkerResults[Any]) -> None:
        super().__init__(message)
        self.results = results
        self.exceptions = {i: e for i, e in enumerate(results.exceptions) if e is not None}


class _NotStarted(ConcurrencyError):
    """This worker never started because another one failed before the barrier."""


def _one_line(exc: BaseException) -> str:
    text = describe_error(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _finish(values: list[Any], excs: list[BaseException | None], elapsed: float,
            return_exceptions: bool) -> WorkerResults[Any]:
    results: WorkerResults[Any] = WorkerResults(values, excs, elapsed)
    for i, exc in enumerate(excs):
        if exc is not None:
            values[i] = exc
    if return_exceptions or results.ok:
        return results
    failed = results.failed
    lines = [f"{len(failed)} of {len(values)} workers failed:"]
    lines += [f"  worker {i}: {_one_line(excs[i])}" for i in failed  # type: ignore[arg-type]
              if not isinstance(excs[i], _NotStarted)]
    skipped = [i for i in failed if isinstance(excs[i], _NotStarted)]
    if skipped:
        lines.append(f"  workers {', '.join(map(str, skipped))} never started (another "
                     f"worker failed before the barrier)")
    error = WorkerError("\n".join(lines), results)
    group = BaseExceptionGroup("worker exceptions", [e for e in excs if e is not None])
    raise error from group


def _hung(url: Any, who: str, hung: list[int], pids: dict[int, int], timeout: float) -> str:
    """Cancel hung workers' queries; describe who waited on whom."""
    message = f"workers {', '.join(map(str, hung))} did not finish within {timeout} s"
    if url is None or not pids:
        return message + " (pass timeout= to allow longer)."
    import psycopg

    from dbtest.concurrency._report import lock_graph

    names = {pid: f"worker {i}" for i, pid in pids.items()}
    try:
        with psycopg.connect(conninfo_for(url, who), autocommit=True) as monitor:
            graph = lock_graph(monitor, names)
            for i in hung:
                if i in pids:
                    monitor.execute("SELECT pg_cancel_backend(%s)", (pids[i],))
    except psycopg.Error as exc:  # pragma: no cover - diagnostic only
        graph = f"  (lock graph unavailable: {exc})"
    return f"{message}; their queries were cancelled. Lock graph (who waits on whom):\n{graph}"


def _pid_of(conn: Any) -> int | None:
    driver = getattr(getattr(conn, "connection", None), "driver_connection", None)
    info = getattr(driver, "info", None)
    pid = getattr(info, "backend_pid", None)
    if isinstance(pid, int):
        return pid
    value = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    conn.rollback()  # leave the connection as fresh as the worker expects it
    return int(value)


def _run_threads(fn: Callable[..., Any], n: int, url: Any, return_exceptions: bool,
                 timeout: float) -> WorkerResults[Any]:
    engine = None
    if url is not None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(sqlalchemy_url_for(url, is_async=False, who="run_concurrently"),
                               poolclass=NullPool)
    barrier = threading.Barrier(n)
    values: list[Any] = [None] * n
    excs: list[BaseException | None] = [None] * n
    pids: dict[int, int] = {}
    released: list[float] = []

    def worker(i: int) -> None:
        conn = None
        started = False
        try:
            if engine is not None:
                conn = engine.connect()
                pid = _pid_of(conn)
                if pid is not None:
                    pids[i] = pid
            try:
                if barrier.wait(timeout=timeout) == 0:
                    released.append(time.monotonic())
            except threading.BrokenBarrierError:
                raise _NotStarted(f"worker {i} never started") from None
            started = True
            value = fn(i, conn) if conn is not None else fn(i)
            if inspect.iscoroutine(value):
                value.close()
                raise ConcurrencyError("the worker function returned a coroutine; pass an "
                                       "async def function (and await run_concurrently)")
            values[i] = value
        except BaseException as exc:
            excs[i] = exc
            if not started:
                barrier.abort()  # the others must not wait for a worker that is gone
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"dbtest-worker-{i}",
                                daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        hung = [i for i, t in enumerate(threads) if t.is_alive()]
        if hung:
            message = _hung(url, "run_concurrently", hung, pids, timeout)
            for i in hung:
                threads[i].join(5)
            raise ConcurrencyError(message)
    finally:
        if engine is not None:
            engine.dispose()
    elapsed = time.monotonic() - released[0] if released else 0.0
    return _finish(values, excs, elapsed, return_exceptions)


async def _run_tasks(fn: Callable[..., Awaitable[Any]], n: int, url: Any,
                     return_exceptions: bool, timeout: float) -> WorkerResults[Any]:
    import asyncio

    engine = None
    if url is not None:
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        engine = create_async_engine(
            sqlalchemy_url_for(url, is_async=True, who="run_concurrently"), poolclass=NullPool)
    barrier = asyncio.Barrier(n)
    values: list[Any] = [None] * n
    excs: list[BaseException | None] = [None] * n
    pids: dict[int, int] = {}
    released: list[float] = []

    async def worker(i: int) -> None:
        conn = None
        started = False
        try:
            if engine is not None:
                conn = await engine.connect()
                result = await conn.exec_driver_sql("SELECT pg_backend_pid()")
                pids[i] = int(result.scalar_one())
                await conn.rollback()
            try:
                if await barrier.wait() == 0:
                    released.append(time.monotonic())
            except asyncio.BrokenBarrierError:
                raise _NotStarted(f"worker {i} never started") from None
            started = True
            values[i] = await (fn(i, conn) if conn is not None else fn(i))
        except Exception as exc:
            excs[i] = exc
            if not started:
                await barrier.abort()
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):  # a cancelled connection
                    await conn.close()

    tasks = [asyncio.create_task(worker(i), name=f"dbtest-worker-{i}") for i in range(n)]
    try:
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            hung = [i for i, t in enumerate(tasks) if t in pending]
            message = _hung(url, "run_concurrently", hung, pids, timeout)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5)
            raise ConcurrencyError(message)
    finally:
        if engine is not None:
            await engine.dispose()
    elapsed = time.monotonic() - released[0] if released else 0.0
    return _finish(values, excs, elapsed, return_exceptions)


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004 - an object with an async __call__


@overload
def run_concurrently(  # type: ignore[overload-overlap]  # async def before plain callables
        fn: Callable[..., Coroutine[Any, Any, T]], n: int, *, url: Any = None,
                     return_exceptions: bool = False,
                     timeout: float = 30.0) -> Coroutine[Any, Any, WorkerResults[T]]: ...
@overload
def run_concurrently(fn: Callable[..., T], n: int, *, url: Any = None,
                     return_exceptions: bool = False,
                     timeout: float = 30.0) -> WorkerResults[T]: ...


def run_concurrently(fn: Callable[..., Any], n: int, *, url: Any = None,
                     return_exceptions: bool = False, timeout: float = 30.0) -> Any:
    """Run ``fn(i)`` in ``n`` workers that start together; results in worker order.

    With ``url`` (``fresh_db.url``, ``fresh_db``, or an Engine) each worker gets its own
    SQLAlchemy connection, opened before the barrier and closed after: ``fn(i, conn)``
    (an ``AsyncConnection`` for ``async def`` functions; ``fresh_db`` picks the async URL
    by itself). Sync ``fn`` runs in threads and the call returns :class:`WorkerResults`;
    an ``async def`` ``fn`` runs as tasks and the call must be awaited.

    If any worker raised, :class:`WorkerError` lists each failure (its cause groups the
    exceptions with their tracebacks) unless ``return_exceptions=True``, which puts the
    exception in the worker's slot instead. Workers still running after ``timeout``
    seconds get their queries cancelled and a :class:`ConcurrencyError` shows the lock
    graph.
    """
    if not callable(fn):
        raise ConcurrencyError(f"run_concurrently needs a function, got {type(fn).__name__}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConcurrencyError(f"run_concurrently needs n >= 1 workers, got {n!r}; pass n=1 "
                               f"or more")
    if url is not None:
        sqlalchemy_url_for(url, is_async=_is_async(fn), who="run_concurrently")  # fail early
    if _is_async(fn):
        return _run_tasks(fn, n, url, return_exceptions, timeout)
    return _run_threads(fn, n, url, return_exceptions, timeout)
