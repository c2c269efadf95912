"""Seeding speed: factory_boy and raw COPY against dbtest's bulk paths, in one run.

    python benchmarks/bench_seed.py [--rows 100000] [--scale 426] [--repeat 3] [--quick]

Starts its own throwaway server (dbtest.ephemeral_postgres). Table: users(email, username,
created_at, bio) as in shared/MEASURED.md. Every approach runs in a transaction that is
rolled back afterwards, the same number of times (``--repeat``, 3), and the median is
shown; slow approaches get fewer rows (rows/s is what compares). Every run is checked:
the rows in the table inside its transaction must be the rows asked (a path that wrote
nothing fails the run), and the demo seed's reported total must be the rows it added.

Peers:
  Faker alone / FastFaker alone   generating the 4 values, no database
  factory_boy create()            one create() (INSERT + flush) per row
  factory_boy build_batch+add_all ORM unit of work, one flush
  dbtest bulk_create (Faker)      the same Faker factory through dbtest's opt-in bulk path
                                  (dbtest.factories.bulk_create; rows equal to create());
                                  Faker still dominates
  dbtest bulk_create (Fake)       factory with dbtest.fakes.Fake declarations: column by
                                  column, COPY, objects returned persistent
  dbtest insert_rows (Fake)       the same factory's rows COPYed without ORM objects
  dbtest FastFaker + bulk_insert  columns of fast values, then bulk_insert (no ORM objects)
  bulk_insert psycopg / asyncpg   pre-generated rows (dicts)
  raw COPY psycopg / asyncpg      write_row / copy_records_to_table of tuples
  seed demo --scale K             `seed_command` in a fresh interpreter, end to end
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import factory
from factory.alchemy import SQLAlchemyModelFactory
from sqlalchemy import DateTime, String, Text, create_engine, func
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

import dbtest
from dbtest import factories as dbf
from dbtest.fakes import Fake, FastFaker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers  # noqa: E402  (a sibling file)

BENCHMARK = {"title": "Seeding rows", "order": 30, "quick": ["--quick"]}


class Base(DeclarativeBase):
    pass


class BenchUser(Base):
    __tablename__ = "bench_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    username: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    bio: Mapped[str] = mapped_column(Text)


class FakerUser(SQLAlchemyModelFactory):
    """What a factory_boy user writes: Faker for every value."""

    class Meta:
        model = BenchUser
        sqlalchemy_session_persistence = "flush"

    email = factory.LazyAttributeSequence(lambda o, n: f"{n}.{o.username}@example.org")  # type: ignore[attr-defined]
    username = factory.Faker("user_name")  # type: ignore[attr-defined]
    created_at = factory.Faker("date_time_this_year", tzinfo=UTC)  # type: ignore[attr-defined]
    bio = factory.Faker("text", max_nb_chars=160)  # type: ignore[attr-defined]


class FastUser(SQLAlchemyModelFactory):
    """The same columns with dbtest.fakes.Fake: realistic, deterministic, unique."""

    class Meta:
        model = BenchUser
        sqlalchemy_session_persistence = "flush"

    email = Fake("email", unique=True)
    username = Fake("user_name")
    created_at = Fake("date_time_between")
    bio = Fake("text", max_nb_chars=160)


def faker_rows(n: int) -> list[dict[str, Any]]:
    from faker import Faker

    fake = Faker()
    fake.seed_instance(1)
    return [{"email": f"{i}.{fake.user_name()}@example.org", "username": fake.user_name(),
             "created_at": fake.date_time_this_year(tzinfo=UTC),
             "bio": fake.text(max_nb_chars=160)} for i in range(n)]


def fast_rows(n: int) -> list[dict[str, Any]]:
    fast = FastFaker(seed=1)
    columns = zip(fast.column("email", n, unique=True), fast.column("user_name", n),
                  fast.column("date_time_between", n), fast.column("text", n, max_nb_chars=160),
                  strict=True)
    return [{"email": e, "username": u, "created_at": c, "bio": b} for e, u, c, b in columns]


class Bench:
    """Runs every approach the same number of times (``repeat``) and keeps the median, and
    checks each run: the rows in the table (inside its transaction) must be the rows asked.
    """

    def __init__(self, server: Any, repeat: int) -> None:
        self.repeat = repeat
        self.server = server
        server.create_database("bench")
        self.url = server.url_for("bench")
        self.engine = create_engine(self.url, poolclass=NullPool)
        Base.metadata.create_all(self.engine)
        self.results: list[tuple[str, int, float]] = []
        self.checks: list[str] = []

    def check(self, name: str, got: int, rows: int) -> None:
        if got != rows:
            self.checks.append(f"{name}: wrote {got:,} rows, {rows:,} asked")

    def run(self, name: str, rows: int, fn: Callable[[Any], Any]) -> None:
        self._record(name, rows, [self._once(name, rows, fn) for _ in range(self.repeat)])

    def _once(self, name: str, rows: int, fn: Callable[[Any], Any]) -> float:
        with self.engine.connect() as conn:
            conn.begin()
            session = Session(bind=conn, join_transaction_mode="create_savepoint")
            unbind = dbf.bind_session(session, seed=1)
            try:
                started = time.perf_counter()
                fn(session)
                session.flush()
                seconds = time.perf_counter() - started
                got = conn.exec_driver_sql("SELECT count(*) FROM bench_users").scalar()
                self.check(name, int(got or 0), rows)
            finally:
                unbind()
                session.close()
                conn.rollback()
        return seconds

    def timed(self, name: str, rows: int, fn: Callable[[], list[Any]]) -> None:
        """No database: ``fn`` returns the generated rows."""
        times = []
        for _ in range(self.repeat):
            started = time.perf_counter()
            made = fn()
            times.append(time.perf_counter() - started)
            self.check(name, len(made), rows)
        self._record(name, rows, times)

    def pair(self, a: tuple[str, Callable[[Any], Any]], b: tuple[str, Callable[[Any], Any]],
             rows: int) -> None:
        times: dict[str, list[float]] = {a[0]: [], b[0]: []}
        for _ in range(self.repeat):  # alternating, so both see the same load
            for name, fn in (a, b):
                times[name].append(self._once(name, rows, fn))
        for name, _fn in (a, b):
            self._record(name, rows, times[name])

    def apair(self, a: tuple[str, Callable[[Any], Any]], b: tuple[str, Callable[[Any], Any]],
              rows: int) -> None:
        times: dict[str, list[float]] = {a[0]: [], b[0]: []}
        for _ in range(self.repeat):
            for name, fn in (a, b):
                times[name].append(self._async_once(name, rows, fn))
        for name, _fn in (a, b):
            self._record(name, rows, times[name])

    def _record(self, name: str, rows: int, times: list[float]) -> None:
        seconds = statistics.median(times)
        self.results.append((name, rows, seconds))
        print(f"  {name}: {rows / seconds:,.0f} rows/s", file=sys.stderr)

    def _async_once(self, name: str, rows: int, fn: Callable[[Any], Any]) -> float:
        async def main() -> float:
            import asyncpg

            p = self.server.params
            conn = await asyncpg.connect(host=p.host, port=p.port, user=p.user,
                                         password=p.password, database="bench")
            try:
                tx = conn.transaction()
                await tx.start()
                started = time.perf_counter()
                await fn(conn)
                seconds = time.perf_counter() - started
                self.check(name, await conn.fetchval("SELECT count(*) FROM bench_users"), rows)
                await tx.rollback()
                return seconds
            finally:
                await conn.close()

        return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="rows (100,000; quick 20,000)")
    parser.add_argument("--slow-rows", type=int, default=None,
                        help="rows of the slow approaches (2,000; quick 1,000)")
    parser.add_argument("--scale", type=int, default=None,
                        help="demo scale (426: ~100k rows; quick 85: ~20k)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of every approach (3)")
    parser.add_argument("--quick", action="store_true", help="fewer rows")
    args = parser.parse_args(argv)
    n = args.rows or (20_000 if args.quick else 100_000)
    slow = args.slow_rows or (1_000 if args.quick else 2_000)
    scale = args.scale or (85 if args.quick else 426)
    with dbtest.ephemeral_postgres() as server:
        bench = Bench(server, args.repeat)
        print("# bench_seed: seeding rows, dbtest's bulk paths vs factory_boy and raw COPY\n")
        _peers.machine_info(f"{server.version} ({server.backend})", [
            f"{n:,} rows; slow approaches {slow:,} (rows/s is what compares); every approach "
            f"run {args.repeat} times, median shown; each run checked: rows written == rows "
            f"asked"])
        bench.timed("Faker alone (4 values)", slow * 2, lambda: faker_rows(slow * 2))
        bench.timed("dbtest FastFaker alone (4 values)", n, lambda: fast_rows(n))
        bench.run("factory_boy create() one by one", slow,
                  lambda s: [FakerUser.create() for _ in range(slow)])
        bench.run("factory_boy build_batch + add_all", slow * 2,
                  lambda s: s.add_all(FakerUser.build_batch(slow * 2)))
        bench.run("dbtest bulk_create (factory.Faker decls)", slow * 2,
                  lambda s: dbf.bulk_create(FakerUser, slow * 2))
        bench.run("dbtest bulk_create (dbtest Fake decls)", n,
                  lambda s: dbf.bulk_create(FastUser, n))
        bench.run("dbtest insert_rows (Fake decls, no objects)", n,
                  lambda s: dbf.insert_rows(FastUser, n))
        bench.run("dbtest FastFaker columns + bulk_insert", n,
                  lambda s: dbtest.bulk_insert(s, BenchUser, fast_rows(n)))
        rows = fast_rows(n)
        tuples = [(r["email"], r["username"], r["created_at"], r["bio"]) for r in rows]
        bench.pair(("bulk_insert psycopg (pre-generated)",
                    lambda s: dbtest.bulk_insert(s.connection(), BenchUser, rows)),
                   ("raw COPY psycopg write_row", lambda s: _raw_copy(s, tuples)), n)

        async def abulk(conn: Any) -> None:
            await dbtest.bulk_insert(conn, "bench_users", rows)

        async def araw(conn: Any) -> None:
            await conn.copy_records_to_table("bench_users", records=tuples,
                                             columns=["email", "username", "created_at", "bio"])

        bench.apair(("bulk_insert asyncpg (pre-generated)", abulk),
                    ("raw asyncpg copy_records_to_table", araw), n)
        demo_rows, demo_s = _demo(server, scale, bench)
        bench.results.append((f"dbtest seed demo --scale {scale} (end to end)",
                              demo_rows, demo_s))
        bench.engine.dispose()
    _print(bench.results, n)
    _peers.print_load("at end")
    for check in bench.checks:
        print(f"FAIL {check}")
    return 1 if bench.checks else 0


def _raw_copy(session: Session, tuples: list[tuple[Any, ...]]) -> None:
    raw = session.connection().connection.dbapi_connection
    with raw.cursor() as cur, cur.copy(  # type: ignore[union-attr]
            "COPY bench_users (email, username, created_at, bio) FROM STDIN") as copy:
        for row in tuples:
            copy.write_row(row)


def _count_all(server: Any, dbname: str) -> int:
    import psycopg

    with psycopg.connect(server.dsn_for(dbname)) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")]
        total = 0
        for t in tables:
            row = conn.execute(f"SELECT count(*) FROM {t}").fetchone()
            total += int(row[0]) if row else 0
        return total


def _demo(server: Any, scale: int, bench: Bench) -> tuple[int, float]:
    from dbtest._schema import load_schema

    server.create_database("demo_tpl")
    engine = create_engine(server.url_for("demo_tpl"), poolclass=NullPool)
    source = load_schema("alembic:migrations_example/alembic.ini", ROOT)
    assert source is not None
    with engine.begin() as conn:
        source.apply(conn)
    engine.dispose()
    before = _count_all(server, "demo_tpl")
    times, total = [], 0
    for run in range(bench.repeat):
        name = server.create_database(f"demo_{run}", template="demo_tpl")
        script = ("import sys; from dbtest.settings import resolve; "
                  "from dbtest.seeding import seed_command; "
                  f"r = seed_command(resolve(), ['demo'], url={server.url_for(name)!r}, "
                  f"scale={scale}, progress=False); print('ROWS', r.total, file=sys.stderr)")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                              text=True, check=True)
        times.append(time.perf_counter() - started)
        total = int(done.stderr.split("ROWS")[-1].split()[0])
        bench.check(f"dbtest seed demo (run {run + 1})", _count_all(server, name) - before,
                    total)
        if total <= 0:
            bench.checks.append(f"dbtest seed demo (run {run + 1}) reported {total} rows")
    return total, statistics.median(times)


def _print(results: list[tuple[str, int, float]], n: int) -> None:
    by_name = {name: rows / s for name, rows, s in results}
    base = by_name["factory_boy create() one by one"]
    print("\n## Seeding users(email, username, created_at, bio) (median of the runs)\n")
    _peers.print_table(["approach", "rows", "seconds", "rows/s", "vs create()"], [
        [name, f"{rows:,}", f"{seconds:.2f}", f"{rows / seconds:,.0f}",
         f"{rows / seconds / base:.1f}x"] for name, rows, seconds in results])
    fast = by_name["dbtest bulk_create (dbtest Fake decls)"]
    plain = by_name["dbtest insert_rows (Fake decls, no objects)"]
    ratio = by_name["bulk_insert psycopg (pre-generated)"] / by_name["raw COPY psycopg write_row"]
    aratio = by_name["bulk_insert asyncpg (pre-generated)"] / \
        by_name["raw asyncpg copy_records_to_table"]
    _, demo_rows, demo_s = results[-1]
    print("\n## Targets\n")
    print(f"{_peers.verdict(plain / base >= 20)} bulk factory path >= 20x factory_boy create(): "
          f"{plain / base:.1f}x (insert_rows), {fast / base:.1f}x (bulk_create, ORM objects)")
    for rate, label in ((plain, "insert_rows, no objects"), (fast, "bulk_create, objects")):
        print(f"{_peers.verdict(rate >= 50_000)} bulk factory path >= 50,000 rows/s ({label}): "
              f"{rate:,.0f} rows/s")
    print(f"{_peers.verdict(min(ratio, aratio) >= 0.8)} bulk_insert >= 80% of raw COPY: "
          f"psycopg {ratio:.0%}, asyncpg {aratio:.0%} (same rows, runs alternated)")
    if demo_rows >= 95_000:
        print(f"{_peers.verdict(demo_s <= 5.0)} `dbtest seed demo` of 100k rows <= 5 s: "
              f"{demo_rows:,} rows in {demo_s:.2f} s (a fresh interpreter included)")
    else:  # the target is for 100k rows; a fixed start-up cost does not scale down
        print(f"(`dbtest seed demo` of 100k rows <= 5 s is judged in the full run; this run: "
              f"{demo_rows:,} rows in {demo_s:.2f} s)")
    print(f"HEADLINE seeding {n:,} users: dbtest insert_rows {plain:,.0f} rows/s, bulk_create "
          f"with ORM objects {fast:,.0f} rows/s, factory_boy create() {base:,.0f} rows/s")


if __name__ == "__main__":
    sys.exit(main())
