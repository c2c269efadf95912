"""run_concurrently: workers with their own connections, released together."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from dbtest.concurrency import WorkerError, run_concurrently
from dbtest.errors import ConcurrencyError


@pytest.fixture
def counters(fresh_db: Any) -> Any:
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE hits (worker int PRIMARY KEY, backend int NOT NULL)")
        conn.execute("CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("INSERT INTO counter VALUES (1, 0)")
    return fresh_db


def scalar(db: Any, query: str) -> Any:
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def test_ten_concurrent_inserts(counters: Any) -> None:
    inside = threading.Barrier(10, timeout=10)  # all ten must be running at the same time

    def insert(i: int, conn: Connection) -> int:
        inside.wait()
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        conn.execute(text("INSERT INTO hits VALUES (:i, :b)"), {"i": i, "b": backend})
        conn.commit()
        return i * 10

    results = run_concurrently(insert, 10, url=counters.url)
    assert list(results) == [i * 10 for i in range(10)]
    assert results.ok and results.failed == [] and len(results) == 10
    assert scalar(counters, "SELECT count(*) FROM hits") == 10
    assert scalar(counters, "SELECT count(DISTINCT backend) FROM hits") == 10


def test_failures_raise_with_each_worker_exception(counters: Any) -> None:
    def insert_same(i: int, conn: Connection) -> int:
        conn.execute(text("INSERT INTO hits VALUES (1, :i)"), {"i": i})
        conn.commit()
        return i

    with pytest.raises(WorkerError) as info:
        run_concurrently(insert_same, 5, url=counters)
    error = info.value
    assert len(error.exceptions) == 4 and error.results.succeeded != []
    assert all(isinstance(e, IntegrityError) for e in error.exceptions.values())
    assert str(error).startswith("4 of 5 workers failed:\n  worker ")
    assert "duplicate key value violates unique constraint" in str(error)
    assert isinstance(error.__cause__, BaseExceptionGroup)
    assert len(error.__cause__.exceptions) == 4

    with psycopg.connect(counters.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM hits")
    results = run_concurrently(insert_same, 3, url=counters.url, return_exceptions=True)
    assert len(results.failed) == 2
    assert [isinstance(r, IntegrityError) for r in results].count(True) == 2


def test_retry_loop_under_serializable(counters: Any) -> None:
    """Serialization failures are retried until every increment committed."""
    def increment(i: int, conn: Connection) -> int:
        conn = conn.execution_options(isolation_level="SERIALIZABLE")
        for attempt in range(1, 100):
            try:
                n = conn.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()
                conn.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})
                conn.commit()
                return attempt
            except OperationalError as exc:
                conn.rollback()
                if getattr(exc.orig, "sqlstate", None) != "40001":
                    raise
        raise AssertionError("no progress")

    attempts = run_concurrently(increment, 6, url=counters.url)
    assert scalar(counters, "SELECT n FROM counter") == 6
    assert sum(attempts) > 6  # they really collided and retried


def test_without_url_and_results_in_worker_order() -> None:
    def work(i: int) -> str:
        time.sleep(0.002 * (5 - i))  # later workers finish first
        return f"w{i}"

    assert list(run_concurrently(work, 5)) == ["w0", "w1", "w2", "w3", "w4"]


async def test_async_workers(counters: Any) -> None:
    async def insert(i: int, conn: AsyncConnection) -> int:
        await conn.execute(text("INSERT INTO hits VALUES (:i, pg_backend_pid())"), {"i": i})
        await conn.commit()
        return i

    results = await run_concurrently(insert, 10, url=counters)  # fresh_db: async URL
    assert list(results) == list(range(10))
    assert scalar(counters, "SELECT count(DISTINCT backend) FROM hits") == 10

    async def fail(i: int) -> None:
        raise ValueError(f"worker {i} broke")

    with pytest.raises(WorkerError, match="worker 1: ValueError: worker 1 broke"):
        await run_concurrently(fail, 2)


def test_hung_worker_times_out_with_lock_graph(counters: Any) -> None:
    with psycopg.connect(counters.dsn) as holder:
        holder.execute("SELECT * FROM counter FOR UPDATE")

        def update(i: int, conn: Connection) -> None:
            conn.execute(text("UPDATE counter SET n = n + 1"))

        started = time.monotonic()
        with pytest.raises(ConcurrencyError, match=r"(?s)workers 0, 1 did not finish within "
                                                   r"0.5 s.*worker 0 \(pid \d+\) waits for"):
            run_concurrently(update, 2, url=counters.url, timeout=0.5)
        assert time.monotonic() - started < 10


@pytest.mark.parametrize(("args", "message"), [
    ((print, 0), "n >= 1"),
    ((42, 2), "needs a function"),
])
def test_bad_arguments(args: tuple[Any, int], message: str) -> None:
    with pytest.raises(ConcurrencyError, match=message):
        run_concurrently(*args)


def test_savepoint_session_refused(db: Any) -> None:
    with pytest.raises(ConcurrencyError, match="Use the fresh_db fixture"):
        run_concurrently(lambda i, conn: None, 2, url=db)


def test_sync_function_returning_a_coroutine() -> None:
    async def work() -> None:
        return None

    with pytest.raises(WorkerError, match="returned a coroutine"):
        # the type checker picks the async overload for a lambda returning a coroutine
        _ = run_concurrently(lambda i: work(), 2)
