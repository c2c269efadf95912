"""Benchmark of issue 6 (snapshots): each row against its peer, round-robin in one run.

1. save + restore of a 100k-row database: dbtest template-copy snapshots vs
   ``pg_dump -Fc`` + ``createdb`` + ``pg_restore -j 2``   (target: dbtest <= 1/5);
2. ``table_state`` of a 10k-row table, text included, vs syrupy's amber serializer on
   the same rows fetched as dicts                        (target: <= 300 ms);
3. the full migration check of ``migrations_example`` (single head, upgrade, stairway
   with schema comparison, model drift) vs pytest-alembic's four default tests called
   in-process, each on a fresh database as its ``alembic_engine`` fixture would get
   (target: faster). pytest-alembic is installed with ``pip --no-deps --target`` into a
   scratch folder when it is not importable: not into the venv, because its pytest
   plugin breaks collection under pytest 9.

Run: ``python benchmarks/bench_snapshot.py [--rounds N]`` (about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _peers  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

import dbtest  # noqa: E402
from dbtest._migrations_check import check_migrations  # noqa: E402
from dbtest.errors import SnapshotError  # noqa: E402
from dbtest.provision._server import PostgresServer  # noqa: E402
from dbtest.snapshots import drop_snapshot, pg_tool, restore_snapshot, save_snapshot  # noqa: E402
from dbtest.state import table_state  # noqa: E402

EXAMPLE_INI = HERE.parent / "migrations_example" / "alembic.ini"
SCRATCH = Path(tempfile.gettempdir()) / "dbtest-bench-pytest-alembic"

DATA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL,
    balance numeric(12, 2) NOT NULL, tags text[], meta jsonb,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id),
    status text NOT NULL, total numeric(10, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_lines (id serial PRIMARY KEY, order_id int NOT NULL REFERENCES orders(id),
    sku text NOT NULL, qty int NOT NULL, price numeric(10, 2) NOT NULL, note text);
INSERT INTO customers (name, email, balance, tags, meta)
SELECT 'customer ' || g, 'c' || g || '@example.com', (g * 7 % 10000) / 100.0,
       ARRAY['t' || g % 5, 'x'], jsonb_build_object('tier', g % 3, 'ref', md5(g::text))
FROM generate_series(1, 10000) g;
INSERT INTO orders (customer_id, status, total)
SELECT 1 + g % 10000, (ARRAY['new', 'paid', 'sent'])[1 + g % 3], (g % 5000) / 10.0
FROM generate_series(1, 40000) g;
INSERT INTO order_lines (order_id, sku, qty, price, note)
SELECT 1 + g % 40000, 'SKU-' || g % 977, 1 + g % 4, (g % 300) / 3.0,
       md5(g::text) || md5((g + 1)::text)
FROM generate_series(1, 50000) g;
ANALYZE;
"""
COUNT = ("SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM orders) "
         "+ (SELECT count(*) FROM order_lines)")


def admin(server: PostgresServer, statement: sql.Composed) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(statement)


def round_robin(rounds: int, methods: dict[str, Callable[[], Any]],
                setups: dict[str, Callable[[], Any]] | None = None) -> dict[str, list[float]]:
    """Milliseconds of each method per round, the methods taking turns."""
    out: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            if setups and name in setups:
                setups[name]()
            out[name].append(_peers.timed(fn) * 1000)
    return out


class Snapshots:
    """dbtest save/restore against pg_dump/pg_restore on the same 100k-row database."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.src = "bench_src"
        server.create_database(self.src)
        with psycopg.connect(server.dsn_for(self.src), autocommit=True) as conn:
            conn.execute(DATA)
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            rows = conn.execute(COUNT).fetchone()
        assert size is not None and rows is not None
        self.rows = rows[0]
        print(f"snapshot database: {self.rows:,} rows in 3 tables, {size[0] / 1e6:.0f} MB",
              flush=True)
        self.dump = Path(tempfile.mkdtemp()) / "bench.dump"
        self.pg_dump, self.pg_restore = pg_tool(server, "pg_dump"), pg_tool(server, "pg_restore")

    def drop_snap(self) -> None:
        with contextlib.suppress(SnapshotError):
            drop_snapshot(self.server, "bench")

    def pg_dump_run(self) -> None:
        subprocess.run([str(self.pg_dump), "-Fc", "-f", str(self.dump), "-d",
                        self.server.dsn_for(self.src)], check=True)

    def drop_src(self) -> None:
        admin(self.server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(self.src)))

    def pg_restore_run(self) -> None:
        self.server.create_database(self.src)  # createdb, marked as dbtest's like the original
        subprocess.run([str(self.pg_restore), "-j", "2", "--no-owner", "-d",
                        self.server.dsn_for(self.src), str(self.dump)], check=True)

    def run(self, rounds: int) -> dict[str, list[float]]:
        times = round_robin(rounds, {
            "dbtest save": lambda: save_snapshot(self.server, self.src, "bench"),
            "dbtest restore": lambda: restore_snapshot(self.server, "bench"),
            "pg_dump -Fc": self.pg_dump_run,
            "createdb + pg_restore -j 2": self.pg_restore_run,
        }, setups={"dbtest save": self.drop_snap, "createdb + pg_restore -j 2": self.drop_src})
        with psycopg.connect(self.server.dsn_for(self.src)) as conn:
            back = conn.execute(COUNT).fetchone()
        assert back == (self.rows,), back
        self.drop_snap()
        return times


def bench_table_state(server: PostgresServer, rounds: int) -> dict[str, list[float]]:
    from syrupy.extensions.amber.serializer import AmberDataSerializer

    engine = create_engine(server.url_for("bench_src"), poolclass=NullPool)
    with engine.connect() as conn:
        first = table_state(conn, "customers").text.splitlines()
        assert len(first) == 10_002 and "<masked>" in first[2], first[:3]

        def amber() -> str:
            rows = conn.execute(text("SELECT * FROM customers ORDER BY id")).mappings().all()
            return AmberDataSerializer.serialize([dict(r) for r in rows])

        times = round_robin(rounds, {"table_state(conn, 'customers').text": lambda: table_state(
            conn, "customers").text, "amber of [dict(row) ...]": amber})
    engine.dispose()
    return times


def load_pytest_alembic() -> str | None:
    """Import pytest_alembic (from a scratch folder if need be); the reason when it fails."""
    try:
        import pytest_alembic
        return None
    except ImportError:
        pass
    if not (SCRATCH / "pytest_alembic").is_dir():
        print(f"installing pytest-alembic into {SCRATCH} (pip --no-deps --target)", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                               "--target", str(SCRATCH), "pytest-alembic"],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            return f"pip install pytest-alembic failed: {done.stderr.strip()[-200:]}"
    sys.path.append(str(SCRATCH))
    try:
        import pytest_alembic  # noqa: F401
    except ImportError as exc:
        return f"pytest-alembic not importable: {exc}"
    return None


def pytest_alembic_suite(server: PostgresServer) -> None:
    from pytest_alembic import runner
    from pytest_alembic.config import Config
    from pytest_alembic.tests import default

    for n, test in enumerate([default.test_single_head_revision, default.test_upgrade,
                              default.test_model_definitions_match_ddl,
                              default.test_up_down_consistency]):
        name = f"bench_pa_{n}"
        server.create_database(name)
        engine = create_engine(server.url_for(name), poolclass=NullPool)
        try:
            with engine.connect() as conn, runner(Config.from_raw_config(
                    {"file": str(EXAMPLE_INI)}), engine=conn) as alembic_runner:
                test(alembic_runner)
        finally:
            engine.dispose()
            server.drop_database(name)


def bench_migrations(server: PostgresServer, rounds: int
                     ) -> tuple[dict[str, list[float]], str | None]:
    report = check_migrations(server, EXAMPLE_INI)
    assert report.ok, str(report)
    methods: dict[str, Callable[[], Any]] = {
        "dbtest check_migrations": lambda: check_migrations(server, EXAMPLE_INI)}
    skipped = load_pytest_alembic()
    if skipped is None:
        pytest_alembic_suite(server)  # warm imports, and prove its tests pass here
        methods["pytest-alembic default tests"] = lambda: pytest_alembic_suite(server)
    return round_robin(rounds, methods), skipped


BENCHMARK = {"title": "Snapshots and migration checks", "order": 50, "quick": ["--quick"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (5; quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    started = time.perf_counter()
    print("# bench_snapshot: database snapshots, table snapshots and migration checks\n")
    with dbtest.ephemeral_postgres() as server:
        _peers.machine_info(f"{server.version} ({server.backend}, "
                            f"{server.details.get('bindir', '?')})")
        snap = Snapshots(server).run(rounds)
        state = bench_table_state(server, rounds)
        migrations, skipped = bench_migrations(server, max(3, rounds - 2))
        _peers.print_load("at end")
    med = {k: statistics.median(v) for d in (snap, state, migrations) for k, v in d.items()}
    p90 = {k: _peers.p90(v) for d in (snap, state, migrations) for k, v in d.items()}
    print()
    _peers.print_table(["what", "median ms", "p90 ms", "n"], [
        (k, f"{med[k]:,.1f}", f"{p90[k]:,.1f}", len(v))
        for d in (snap, state, migrations) for k, v in d.items()])
    print()
    ours = med["dbtest save"] + med["dbtest restore"]
    theirs = med["pg_dump -Fc"] + med["createdb + pg_restore -j 2"]
    print(f"{_peers.verdict(ours * 5 <= theirs)} snapshot save + restore <= 1/5 of pg_dump + "
          f"pg_restore: {ours:.1f} ms vs {theirs:.1f} ms ({theirs / ours:.1f}x)")
    ts = med["table_state(conn, 'customers').text"]
    print(f"{_peers.verdict(ts <= 300)} table_state of 10k rows <= 300 ms: {ts:.1f} ms "
          f"(syrupy amber of the same rows as dicts: {med['amber of [dict(row) ...]']:.1f} ms)")
    mc = med["dbtest check_migrations"]
    if skipped:
        print(f"MISS migration check faster than pytest-alembic: not measured, {skipped} "
              f"(dbtest: {mc:.1f} ms)")
    else:
        pa = med["pytest-alembic default tests"]
        print(f"{_peers.verdict(mc < pa)} migration check faster than pytest-alembic's default "
              f"tests: {mc:.1f} ms vs {pa:.1f} ms ({pa / mc:.1f}x; dbtest also runs the "
              f"per-revision stairway with schema comparison)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
