"""In-process rows of ``bench_isolation.py``: one test's isolation, timed per iteration on
one dbtest server (tmpfs) and the worker database of a ``Workspace``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import _peers

SYNC_BARE, SYNC_PLAIN, SYNC_SP = ("sync: bare `select 1` round trip (pooled connection)",
                                  "sync: test body, no isolation (real COMMIT)",
                                  "sync: test body inside dbtest.savepoint(engine)")
ASYNC_BARE, ASYNC_PLAIN, ASYNC_SP = ("async: bare `select 1` round trip (asyncpg, pooled)",
                                     "async: test body, no isolation (real COMMIT)",
                                     "async: test body inside dbtest.async_savepoint(engine)")
TRUNC = "TRUNCATE 10 tables + reseed 1,000 rows + test body"
CLONE = "CREATE DATABASE ... TEMPLATE + connect + test body + DROP (pytest-postgresql's way)"
FRESH_POOL, FRESH_NOPOOL = "fresh_db with the pool (pool_size=2)", "fresh_db, pool_size=0"


def _interleaved(fns: dict[str, Callable[[], Any]], total: int, block: int = 25
                 ) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(max(1, total // block)):
        for label, fn in fns.items():
            for _ in range(block):
                out[label].append(_peers.timed(fn))
    return out


def sync_bodies(engine: Any, models: Any, total: int) -> dict[str, list[float]]:
    from sqlalchemy import func, select, text
    from sqlalchemy.orm import Session

    from dbtest._isolation import savepoint as dbtest_savepoint  # dbtest.savepoint

    count = select(func.count()).select_from(models.T0)

    def bare() -> None:
        with engine.connect() as conn:
            conn.execute(text("select 1")).scalar()

    def plain() -> None:
        with Session(engine) as s:
            s.add(models.T0(name="row"))
            s.commit()
            s.scalar(count)

    def savepoint() -> None:
        with dbtest_savepoint(engine) as s:
            s.add(models.T0(name="row"))
            s.commit()
            s.scalar(count)

    return _interleaved({SYNC_BARE: bare, SYNC_PLAIN: plain, SYNC_SP: savepoint}, total)


async def async_bodies(url: str, models: Any, total: int) -> dict[str, list[float]]:
    from sqlalchemy import func, select, text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from dbtest._isolation import async_savepoint  # dbtest.async_savepoint

    engine = create_async_engine(url)
    count = select(func.count()).select_from(models.T0)

    async def bare() -> None:
        async with engine.connect() as conn:
            (await conn.execute(text("select 1"))).scalar()

    async def plain() -> None:
        async with AsyncSession(engine) as s:
            s.add(models.T0(name="row"))
            await s.commit()
            await s.scalar(count)

    async def savepoint() -> None:
        async with async_savepoint(engine) as s:
            s.add(models.T0(name="row"))
            await s.commit()
            await s.scalar(count)

    out: dict[str, list[float]] = {ASYNC_BARE: [], ASYNC_PLAIN: [], ASYNC_SP: []}
    for _ in range(max(1, total // 25)):
        for label, fn in ((ASYNC_BARE, bare), (ASYNC_PLAIN, plain), (ASYNC_SP, savepoint)):
            for _ in range(25):
                started = time.perf_counter()
                await fn()
                out[label].append(time.perf_counter() - started)
    await engine.dispose()
    return out


def truncate_reseed(engine: Any, models: Any, total: int) -> list[float]:
    from sqlalchemy import func, select, text
    from sqlalchemy.orm import Session

    tables = models.Base.metadata.sorted_tables
    quote = engine.dialect.identifier_preparer.format_table
    truncate = text(f"TRUNCATE {', '.join(quote(t) for t in tables)} RESTART IDENTITY CASCADE")
    rows = {t: [{"name": f"seed {j}", **({"parent_id": j} if "parent_id" in t.c else {})}
                for j in range(1, 101)] for t in tables}

    def run() -> None:
        with engine.begin() as conn:  # what a TRUNCATE-based fixture does between tests
            conn.execute(truncate)
            for table in tables:
                conn.execute(table.insert(), rows[table])
        with Session(engine) as s:  # the test body
            s.add(models.T0(name="row"))
            s.commit()
            s.scalar(select(func.count()).select_from(models.T0))

    return [_peers.timed(run) for _ in range(total)]


def clone_per_test(server: Any, template: str, total: int) -> list[float]:
    import psycopg
    from psycopg import sql

    def run(i: int) -> None:
        name = sql.Identifier(f"bench_clone_{i}")
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            name, sql.Identifier(template)))
        with psycopg.connect(server.dsn_for(f"bench_clone_{i}")) as conn:
            conn.execute("insert into t0 (name) values ('row')")
            conn.commit()
            conn.execute("select count(*) from t0").fetchone()
        # as pytest-postgresql's janitor: refuse new connections, end the rest, drop
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(name))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s", (f"bench_clone_{i}",))
        admin.execute(sql.SQL("DROP DATABASE {}").format(name))

    with psycopg.connect(server.dsn, autocommit=True) as admin:
        return [_peers.timed(lambda i=i: run(i)) for i in range(total)]


def fresh_waits(ws: Any, total: int) -> dict[str, list[float]]:
    """Acquire like the ``fresh_db`` fixture, run a small test body, release like it."""
    import psycopg

    key = ws.default_key()
    out: dict[str, list[float]] = {"wait": [], "teardown": []}
    for i in range(total + 2):  # the first two start the pool: not counted
        started = time.perf_counter()
        fresh = ws.fresh_database(key)
        wait = time.perf_counter() - started
        with psycopg.connect(fresh.dsn) as conn:
            conn.execute("insert into t0 (name) values ('row')")
            conn.commit()
        started = time.perf_counter()
        with psycopg.connect(ws.server.dsn, autocommit=True) as admin:
            deadline = time.monotonic() + 1.0  # the fixture waits for closed backends
            while time.monotonic() < deadline and admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                    (fresh.name,)).fetchone() != (0,):
                time.sleep(0.005)
        ws.release_fresh(key, fresh)
        if i >= 2:
            out["wait"].append(wait)
            out["teardown"].append(time.perf_counter() - started)
    return out


def in_process(cache: Any, proj: Any, models: Any, quick: bool
               ) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    from dbtest._workspace import Workspace
    from dbtest.provision import ephemeral_postgres  # dbtest.ephemeral_postgres
    from dbtest.settings import resolve

    settings = resolve({"schema": "metadata:models:Base", "cache_dir": cache,
                        "backend": "local"}, pyproject=None, read_env=False, root=proj)
    with ephemeral_postgres(settings=settings) as server:
        ws = Workspace(settings, server=server)
        try:
            key = ws.default_key()
            worker = ws.worker_database(key)
            inproc = sync_bodies(worker.engine, models, 200 if quick else 500)
            inproc.update(asyncio.run(async_bodies(worker.async_url, models,
                                                   100 if quick else 300)))
            inproc[TRUNC] = truncate_reseed(worker.engine, models, 10 if quick else 30)
            inproc[CLONE] = clone_per_test(server, ws.templates.get(key).name,
                                           5 if quick else 15)
            fresh = {}
            for label, size in ((FRESH_POOL, 2), (FRESH_NOPOOL, 0)):
                fws = Workspace(settings.replace(pool_size=size), server=server)
                try:
                    fresh[label] = fresh_waits(fws, 10 if quick else 30)
                finally:
                    fws.close()
        finally:
            ws.close()
    return inproc, fresh
