"""What the leak check costs per test (issue 13), before and after "no blind spots".

    python benchmarks/bench_leaks.py [--tests N] [--rounds R]

One throwaway server; a worker database of a 10-table schema cloned from its template by
a :class:`dbtest._workspace.Workspace`, with the leak record installed as the fixtures use
it. A "test" is what ``db_connection`` does around a body: connect (pooled), begin, insert
a row, roll back. Measured per test: the median of N x R single tests of each kind (the
kinds take turns test by test), minus that of the same test without any check:

- before this issue: one query inside the test's transaction at its end;
- now: the check at the start (inside the transaction, before the body) and at the end,
  through :class:`dbtest._leakcheck.Checker` exactly as the fixture calls it (with its
  VACUUM of the leak record every 200 checks; each loop starts from a vacuumed record);
- now, without the DDL event triggers (a role that is not superuser): the catalog
  fingerprint, checked after the rollback;
- what the event triggers add to one DDL statement (``CREATE TABLE`` + rollback), the
  price of recording DDL as it happens instead of fingerprinting the catalog per test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import print_table, verdict  # a sibling file, not a package

import dbtest
from dbtest import _leaks as leaks
from dbtest._leakcheck import Checker
from dbtest._workspace import Workspace
from dbtest.settings import resolve

SCHEMA = "\n".join(f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL"
                   + (f", parent_id int REFERENCES t{i - 1}(id));" if i else ");")
                   for i in range(10))
LIMIT_MS = 0.3


def per_test(loops: dict[str, Callable[[int], None]], n: int, rounds: int,
             reset: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds of one test of each kind, over ``n`` x ``rounds`` tests each. The
    kinds take turns test by test, so a change in the machine's load hits them alike, and
    the median of single tests leaves out the ones a busy scheduler stretched.
    ``reset()`` runs (untimed) before each round."""
    for loop in loops.values():
        loop(max(n // 10, 10))  # warm up
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        reset()
        for _ in range(n):
            for name, loop in loops.items():
                started = time.perf_counter()
                loop(1)
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n, rounds = args.tests, args.rounds
    print(f"load before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp, \
            dbtest.ephemeral_postgres(cache_dir=str(Path(tmp) / "cache")) as server:
        (Path(tmp) / "schema.sql").write_text(SCHEMA)
        settings = resolve({"schema": "sql:schema.sql", "seeds": tmp}, environ={},
                           pyproject=None, root=Path(tmp))
        ws = Workspace(settings, server=server)
        key = ws.default_key()
        worker = ws.worker_database(key)
        engine = worker.engine
        tracker = leaks.Tracker()
        checker = Checker(ws, key, "bench::test", tracker)
        insert = "INSERT INTO t0 (name) VALUES ('x')"

        def bare(k: int) -> None:
            for _ in range(k):
                with engine.connect() as conn:
                    conn.begin()
                    conn.exec_driver_sql(insert)
                    conn.rollback()

        def before(k: int) -> None:  # the check as it was: one query before the rollback
            for _ in range(k):
                with engine.connect() as conn:
                    conn.begin()
                    conn.exec_driver_sql(insert)
                    conn.exec_driver_sql(leaks.CHECK_IN_TRANSACTION).all()
                    conn.rollback()

        def round_trip(k: int) -> None:  # one more `SELECT 1` inside the test's transaction
            for _ in range(k):
                with engine.connect() as conn:
                    conn.begin()
                    conn.exec_driver_sql(insert)
                    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                    cursor.execute("SELECT 1")
                    cursor.fetchall()
                    cursor.close()
                    conn.rollback()

        def now(k: int) -> None:
            for _ in range(k):
                w, conn = checker.begin()
                conn.exec_driver_sql(insert)
                checker.end(w, conn)

        def vacuum() -> None:  # each loop starts from an empty leak record
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    leaks.VACUUM)

        got = per_test({"bare": bare, "before": before, "now": now, "rtt": round_trip}, n,
                       rounds, vacuum)
        old, new = got["before"] - got["bare"], got["now"] - got["bare"]
        rtt = got["rtt"] - got["bare"]
        worker.ddl_events = False  # the fingerprint path (no event triggers used)
        with engine.begin() as conn:  # its baseline, as install() stores it without them
            conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {leaks.INTERNAL_SCHEMA}"
                                 f".baseline (fp text NOT NULL)")
            conn.exec_driver_sql(f"TRUNCATE {leaks.INTERNAL_SCHEMA}.baseline")
            conn.exec_driver_sql(f"INSERT INTO {leaks.INTERNAL_SCHEMA}.baseline "
                                 f"SELECT {leaks.FINGERPRINT}")
        tracker.since_clean.clear()
        got = per_test({"bare": bare, "fp": now}, n // 4, rounds, vacuum)
        fingerprint = got["fp"] - got["bare"]
        worker.ddl_events = True

        def ddl(k: int) -> None:
            with engine.connect() as conn:
                for _ in range(k):
                    conn.begin()
                    conn.exec_driver_sql("CREATE TABLE scratch (id int)")
                    conn.rollback()

        ddl_with = per_test({"ddl": ddl}, n // 4, rounds)["ddl"]
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER EVENT TRIGGER dbtest_leak_ddl DISABLE")
        ddl_without = per_test({"ddl": ddl}, n // 4, rounds)["ddl"]
        ws.close()
    load = os.getloadavg()[0]
    print(f"\n{n} tests x {rounds} rounds, PostgreSQL {server.version} ({server.backend}), "
          f"load after: {load:.2f}\n")
    print_table(["leak check", "ms per test", "in round trips", f"<= {LIMIT_MS} ms"], [
        ("one more `SELECT 1` round trip, for scale", f"{rtt * 1000:.3f}", "1", ""),
        ("before: one query at the end (DML only; DDL and new tables unseen)",
         f"{old * 1000:.3f}", f"{old / rtt:.1f}", verdict(old * 1000 <= LIMIT_MS)),
        ("now: at the start and at the end (DML, DDL, tables created later)",
         f"{new * 1000:.3f}", f"{new / rtt:.1f}", verdict(new * 1000 <= LIMIT_MS)),
        ("now, without superuser: catalog fingerprint after the rollback",
         f"{fingerprint * 1000:.3f}", f"{fingerprint / rtt:.1f}",
         verdict(fingerprint * 1000 <= LIMIT_MS)),
    ])
    print()
    print_table(["one DDL statement (CREATE TABLE + ROLLBACK)", "ms"], [
        ("with the DDL event triggers", f"{ddl_with * 1000:.3f}"),
        ("without", f"{ddl_without * 1000:.3f}"),
    ])


if __name__ == "__main__":
    main()
