"""What isolating one test costs with dbtest, side by side with the peer approaches (issue 4).

    python benchmarks/bench_isolation.py [--tests N] [--rounds R] [--quick] [--no-peers]

On a generated project whose ``[tool.dbtest] schema`` is a 10-table SQLAlchemy model with
foreign keys (``metadata:models:Base``), one run measures:

- whole pytest suites of N tests (default 1,000; each inserts a row and asserts a count):
  ``db``, ``async_db``, the same bodies without isolation (a plain ``Session`` on
  ``db_engine`` committing for real), and N trivial tests (sync, async) to subtract;
- the same suite on pytest-postgresql (its ``postgresql`` fixture clones a template per
  test), data dir on tmpfs (200 tests) and on disk, its default (10 tests); its N-test
  time is projected from the time per added test, ``(T(k) - T(1)) / (k - 1)``;
- in-process: a bare ``select 1`` round trip, the test body without isolation and inside
  ``dbtest.savepoint`` / ``dbtest.async_savepoint``, TRUNCATE-and-reseed per test, a
  template clone per test, and the ``fresh_db`` wait with the pool and with pool_size=0;
- migration steps applied by a first run and by an unchanged rerun (dbtest's summary line),
  for this project and for the repo's Alembic example.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers  # a sibling file, not a package
from _peers import ms, p90, print_table, verdict

REPO = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"template (\S+) \((.*?)\): ((?:re)?built(?: because .*?;|,) (\d+) "
                     r"migration step\(s\) applied|reused \(verified in \d+ ms\)) in (\d+) ms")
SUITES = [  # key, label, the trivial suite it is compared with
    ("bare", "{n} trivial sync tests", None),
    ("bare_async", "{n} trivial async tests", None),
    ("noiso", "no isolation: Session(db_engine) insert + commit + count", "bare"),
    ("db", "db (savepoint): insert + commit + count", "bare"),
    ("noiso_async", "no isolation: AsyncSession(asyncpg engine) insert + commit + count",
     "bare_async"),
    ("async_db", "async_db (savepoint, asyncpg): insert + commit + count", "bare_async"),
]
SYNC_BARE, SYNC_PLAIN, SYNC_SP = ("sync: bare `select 1` round trip (pooled connection)",
                                  "sync: test body, no isolation (real COMMIT)",
                                  "sync: test body inside dbtest.savepoint(engine)")
ASYNC_BARE, ASYNC_PLAIN, ASYNC_SP = ("async: bare `select 1` round trip (asyncpg, pooled)",
                                     "async: test body, no isolation (real COMMIT)",
                                     "async: test body inside dbtest.async_savepoint(engine)")
LEAK = "sync: dbtest's leak check after a test (leaks.touched_tables + rollback)"
TRUNC = "TRUNCATE 10 tables + reseed 1,000 rows + test body"
CLONE = "CREATE DATABASE ... TEMPLATE + connect + test body + DROP (pytest-postgresql's way)"
FRESH_POOL, FRESH_NOPOOL = "fresh_db with the pool (pool_size=2)", "fresh_db, pool_size=0"

# -- the generated projects ---------------------------------------------------------------
MODELS = '''"""10 tables, each with a foreign key to the one before (t1 -> t0 ... t9 -> t8)."""
from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, mapped_column


class Base(DeclarativeBase):
    pass


TABLES = []
for _i in range(10):
    _cols = {"__tablename__": f"t{_i}", "id": mapped_column(Integer, primary_key=True),
             "name": mapped_column(String(100), nullable=False)}
    if _i:
        _cols["parent_id"] = mapped_column(ForeignKey(f"t{_i - 1}.id", ondelete="CASCADE"),
                                           index=True)
    TABLES.append(type(f"T{_i}", (Base,), _cols))
T0 = TABLES[0]
'''
PYPROJECT = """[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
pythonpath = ["."]

[tool.dbtest]
schema = "{schema}"
"""
CONFTEST = """import pytest_asyncio


@pytest_asyncio.fixture(scope="session")
async def plain_async_engine(db_engine):
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(db_engine.url.set(drivername="postgresql+asyncpg"))
    yield engine
    await engine.dispose()
"""
_HEAD = ("{imports}import pytest\nfrom sqlalchemy import func, select\n\nfrom models import T0"
         "\n\nCOUNT = select(func.count()).select_from(T0)\n\n\n"
         "@pytest.mark.parametrize('i', range({n}))\n")
_BODIES = {  # file -> (extra imports, test function)
    "test_bare.py": ("", "def test_bare(i):\n    assert i >= 0\n"),
    "test_bare_async.py": ("", "async def test_bare(i):\n    assert i >= 0\n"),
    "test_db.py": ("", "def test_insert(db, i):\n    db.add(T0(name=f'row {i}'))\n"
                   "    db.commit()\n    assert db.scalar(COUNT) == 1\n"),
    "test_async_db.py": ("", "async def test_insert(async_db, i):\n"
                         "    async_db.add(T0(name=f'row {i}'))\n    await async_db.commit()\n"
                         "    assert await async_db.scalar(COUNT) == 1\n"),
    "test_noiso.py": ("from sqlalchemy.orm import Session\n",
                      "def test_insert(db_engine, i):\n    with Session(db_engine) as s:\n"
                      "        s.add(T0(name=f'row {i}'))\n        s.commit()\n"
                      "        assert s.scalar(COUNT) >= 1\n"),
    "test_noiso_async.py": ("from sqlalchemy.ext.asyncio import AsyncSession\n",
                            "async def test_insert(plain_async_engine, i):\n"
                            "    async with AsyncSession(plain_async_engine) as s:\n"
                            "        s.add(T0(name=f'row {i}'))\n        await s.commit()\n"
                            "        assert await s.scalar(COUNT) >= 1\n"),
}
WARM_TEST = ("from sqlalchemy import text\n\n\ndef test_sync(db):\n"
             "    assert db.scalar(text('select 1')) == 1\n")
PP_TEST = """import pytest


@pytest.mark.parametrize("i", range({n}))
def test_insert(postgresql, i):
    with postgresql.cursor() as cur:
        cur.execute("insert into t0 (name) values (%s)", (f"row {{i}}",))
        postgresql.commit()
        cur.execute("select count(*) from t0")
        assert cur.fetchone() == (1,)
"""


def test_source(name: str, n: int) -> str:
    imports, body = _BODIES[name]
    return _HEAD.format(imports=imports, n=n) + body


def write_project(proj: Path, schema: str, files: dict[str, str]) -> None:
    proj.mkdir()
    (proj / "pyproject.toml").write_text(PYPROJECT.format(schema=schema))
    for name, text in files.items():
        (proj / name).write_text(text)


def schema_sql(models: Any) -> str:
    """The models' DDL as plain SQL, for pytest-postgresql's template."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    ddl = []
    for table in models.Base.metadata.sorted_tables:
        ddl.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        ddl += [str(CreateIndex(i).compile(dialect=dialect)) for i in table.indexes]
    return ";\n".join(ddl) + ";\n"


class Bench:
    """Folders, environment and samples of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        import pwd

        from dbtest.provision.binaries import find_binaries
        from dbtest.provision.runas import server_account

        self.args, self.n = args, args.tests
        self.binaries = find_binaries()
        acct = server_account()
        self.account = pwd.getpwuid(acct.uid) if acct.switched else None
        self.root = Path(tempfile.mkdtemp(prefix="dbtest-bench-iso-", dir=args.disk_dir))
        os.chmod(self.root, 0o755)  # the server account enters the peers' folders below
        self.cache, self.proj = self.root / "cache", self.root / "proj"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DBTEST_")}
        self.env.update(DBTEST_CACHE_DIR=str(self.cache), DBTEST_BACKEND="local")
        self.suite_times: dict[str, list[float]] = {}
        self.peer: dict[str, float | str] = {}
        self.migrations: dict[str, list[tuple[str, int, str]]] = {}
        files = {name: test_source(name, self.n) for name in _BODIES}
        write_project(self.proj, "metadata:models:Base", {
            "models.py": MODELS, "conftest.py": CONFTEST, "test_warm.py": WARM_TEST, **files})
        sys.path.insert(0, str(self.proj))
        import models  # the generated module

        self.models = models
        (self.proj / "schema.sql").write_text(schema_sql(models))

    def pytest(self, proj: Path, *args: str) -> tuple[float, str]:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=proj, env=self.env, capture_output=True, text=True,
                              check=False)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"pytest {' '.join(args)} in {proj} exited {proc.returncode}:"
                               f"\n{(proc.stdout + proc.stderr)[-1500:]}")
        return seconds, proc.stdout

    def measure_migrations(self) -> None:
        """First run vs unchanged rerun, from dbtest's terminal summary line."""
        alembic = self.root / "proj-alembic"
        ini = REPO / "migrations_example" / "alembic.ini"
        write_project(alembic, f"alembic:{ini}", {"test_warm.py": WARM_TEST})
        for name, proj in (("metadata:models:Base", self.proj),
                           ("alembic:migrations_example/alembic.ini", alembic)):
            for run in ("first run", "unchanged rerun"):
                seconds, out = self.pytest(proj, "test_warm.py")
                found = SUMMARY.findall(out) or [("", "", "no dbtest summary line found", "",
                                                  "?")]
                self.migrations.setdefault(name, []).extend(
                    (run, int(m[3] or 0) if m[0] else -1,
                     f"{m[2]} in {m[4]} ms (whole pytest process {seconds:.2f} s)")
                    for m in found)

    def suites(self) -> None:
        for r in range(self.args.rounds):  # round-robin: load hits every suite alike
            for key, _, _ in SUITES:
                seconds, out = self.pytest(self.proj, f"test_{key}.py")
                if f"{self.n} passed" not in out:
                    raise RuntimeError(f"test_{key}.py: unexpected output {out[-500:]}")
                self.suite_times.setdefault(key, []).append(seconds)
            print(f"dbtest suites, round {r + 1}/{self.args.rounds} done", flush=True)

    def peer_suites(self, env: _peers.PeerEnv) -> None:
        proj = self.root / "proj-peer"
        tmpfs_n, disk_n = self.args.peer_tests, self.args.peer_disk_tests
        write_project(proj, "", {"schema.sql": (self.proj / "schema.sql").read_text(),
                                 "test_bare.py": test_source("test_bare.py", tmpfs_n),
                                 **{f"test_pp_{k}.py": PP_TEST.format(n=k)
                                    for k in {1, tmpfs_n, disk_n}}})
        (proj / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
        _peers.give_to(proj, env.account)
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        for key, count, where in (("peer_bare", tmpfs_n, "disk"), ("pp_tmpfs_1", 1, "tmpfs"),
                                  ("pp_tmpfs", tmpfs_n, "tmpfs"), ("pp_disk_1", 1, "disk"),
                                  ("pp_disk", disk_n, "disk")):
            bt = _peers.private_dir("dbtest-bench-pp-", env.account,
                                    shm if where == "tmpfs" else str(proj))
            test = "test_bare.py" if key == "peer_bare" else f"test_pp_{count}.py"
            cmd = [str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--basetemp={bt}", f"--postgresql-exec={self.binaries.tool('pg_ctl')}",
                   f"--postgresql-load={proj / 'schema.sql'}", test]
            started = time.perf_counter()
            proc = env.run(cmd, cwd=proj, timeout=1800)
            seconds = time.perf_counter() - started
            shutil.rmtree(bt, ignore_errors=True)
            ok = proc.returncode == 0 and f"{count} passed" in proc.stdout
            self.peer[key] = seconds if ok else \
                f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}"
            print(f"pytest-postgresql suite {key} ({count} tests) done: {seconds:.1f} s",
                  flush=True)


# -- in-process measurements ----------------------------------------------------------------
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

    from dbtest import leaks
    from dbtest.isolation import savepoint as dbtest_savepoint  # dbtest.savepoint

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

    def leak_check() -> None:  # what the db fixture runs at teardown, on its connection
        with engine.connect() as conn:
            leaks.touched_tables(conn)
            conn.rollback()

    return _interleaved({SYNC_BARE: bare, SYNC_PLAIN: plain, SYNC_SP: savepoint,
                         LEAK: leak_check}, total)


async def async_bodies(url: str, models: Any, total: int) -> dict[str, list[float]]:
    from sqlalchemy import func, select, text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from dbtest.isolation import async_savepoint  # dbtest.async_savepoint

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
        return [_peers.timed(lambda i=i: run(i)) for i in range(total)]  # type: ignore[misc]


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


def in_process(b: Bench) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    from dbtest.provision import ephemeral_postgres  # dbtest.ephemeral_postgres
    from dbtest.settings import resolve
    from dbtest.workspace import Workspace

    quick = b.args.quick
    settings = resolve({"schema": "metadata:models:Base", "cache_dir": b.cache,
                        "backend": "local"}, pyproject=None, read_env=False, root=b.proj)
    with ephemeral_postgres(settings=settings) as server:
        ws = Workspace(settings, server=server)
        try:
            key = ws.default_key()
            worker = ws.worker_database(key)
            inproc = sync_bodies(worker.engine, b.models, 200 if quick else 500)
            inproc.update(asyncio.run(async_bodies(worker.async_url, b.models,
                                                   100 if quick else 300)))
            inproc[TRUNC] = truncate_reseed(worker.engine, b.models, 10 if quick else 30)
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


# -- report --------------------------------------------------------------------------------
def report(b: Bench, inproc: dict[str, list[float]],
           fresh: dict[str, dict[str, list[float]]]) -> None:
    n, med = b.n, {k: statistics.median(v) for k, v in b.suite_times.items()}
    print(f"\n## pytest suites of {n:,} tests: whole process (median of {b.args.rounds} run(s))")
    rows = [[label.format(n=f"{n:,}"), f"{med[key]:.2f}", f"{med[key] / n * 1000:.2f}",
             "" if base is None else f"{(med[key] - med[base]) / n * 1000:+.2f}"]
            for key, label, base in SUITES if key in med]
    proj = projected(b)
    for key, label in (("pp_tmpfs", "tmpfs"), ("pp_disk", "disk (its default)")):
        value = b.peer.get(key)
        count = b.args.peer_tests if key == "pp_tmpfs" else b.args.peer_disk_tests
        name = f"pytest-postgresql `postgresql` fixture (clones a template), {label}"
        if isinstance(value, float) and key in proj:
            total, marginal = proj[key]
            est = "" if count == n else f" ({n:,}: {total:.1f} s projected)"
            rows.append([f"{name}, {count:,} tests{est}", f"{value:.2f}",
                         f"{value / count * 1000:.2f}", f"{marginal * 1000:.2f} per added test"])
        elif value is not None:
            rows.append([name, "-", "-", str(value)[:100]])
    if isinstance(b.peer.get("peer_bare"), float):
        value = float(b.peer["peer_bare"])
        rows.append([f"{b.args.peer_tests:,} trivial tests in the peers' venv", f"{value:.2f}",
                     f"{value / b.args.peer_tests * 1000:.2f}", ""])
    print_table(["suite", "total s", "ms per test", "ms per test vs trivial suite"], rows)
    print("\n## In-process, per test (ms; dbtest's server on tmpfs)")
    rows = [[label, ms(statistics.median(v)), ms(p90(v)), str(len(v))]
            for label, v in inproc.items()]
    rows += [[f"{label}: {what}", ms(statistics.median(v)), ms(p90(v)), str(len(v))]
             for label, parts in fresh.items() for what, v in parts.items()]
    print_table(["what", "median ms", "p90 ms", "n"], rows)
    print("\n## Migration steps applied (dbtest's terminal summary line)")
    for name, runs in b.migrations.items():
        for run, _, text in runs:
            print(f"- {name}, {run}: {text}")
    targets(b, med, inproc, fresh, proj)


def projected(b: Bench) -> dict[str, tuple[float, float]]:
    """pytest-postgresql: (N-test suite seconds, seconds per added test)."""
    out = {}
    for key, count in (("pp_tmpfs", b.args.peer_tests), ("pp_disk", b.args.peer_disk_tests)):
        full, one = b.peer.get(key), b.peer.get(key + "_1")
        if isinstance(full, float) and isinstance(one, float) and count > 1:
            marginal = (full - one) / (count - 1)
            out[key] = (full if count == b.n else one + (b.n - 1) * marginal, marginal)
    return out


def targets(b: Bench, med: dict[str, float], inproc: dict[str, list[float]],
            fresh: dict[str, dict[str, list[float]]], proj: dict[str, tuple[float, float]]
            ) -> None:
    print("\n## Targets (issue 4)")
    for kind, limit, iso, plain, sp, pl in (
            ("sync", 1.5, "db", "noiso", SYNC_SP, SYNC_PLAIN),
            ("async", 2.0, "async_db", "noiso_async", ASYNC_SP, ASYNC_PLAIN)):
        if iso in med and plain in med:
            over = (med[iso] - med[plain]) / b.n * 1000
            print(f"{verdict(over <= limit)} savepoint isolation overhead <= {limit} ms per test "
                  f"({kind}), pytest suites: {over:.2f} ms ({iso} suite minus the same bodies "
                  f"without isolation, / {b.n:,})")
        if sp in inproc and pl in inproc:
            a, c = statistics.median(inproc[sp]), statistics.median(inproc[pl])
            print(f"{verdict((a - c) * 1000 <= limit)} savepoint isolation overhead <= {limit} "
                  f"ms per test ({kind}), in-process: {(a - c) * 1000:.2f} ms ({ms(a)} in a "
                  f"savepoint vs {ms(c)} without)")
            if iso in med and plain in med and LEAK in inproc:
                total, leak = (med[iso] - med[plain]) / b.n, statistics.median(inproc[LEAK])
                print(f"     where the {kind} fixture time goes: savepoint statements "
                      f"{ms(a - c)} + leak check {ms(leak)} + the rest (connection, session, "
                      f"fixture plumbing) {ms(total - (a - c) - leak)} ms per test")
    pooled = fresh.get(FRESH_POOL, {}).get("wait")
    if pooled:
        unpooled = fresh.get(FRESH_NOPOOL, {}).get("wait") or [float("nan")]
        print(f"{verdict(statistics.median(pooled) <= 0.005)} fresh_db median wait <= 5 ms with "
              f"the pool: {ms(statistics.median(pooled))} ms (p90 {ms(p90(pooled))}; without "
              f"the pool {ms(statistics.median(unpooled))} ms)")
    for name, runs in b.migrations.items():
        first = [s for r, s, _ in runs if r == "first run"]
        rerun = [s for r, s, _ in runs if r != "first run"]
        print(f"{verdict(bool(rerun) and all(s == 0 for s in rerun))} unchanged rerun applies 0 "
              f"migrations ({name}): first run {sum(first)} step(s), rerun {sum(rerun)}")
    for key, label in (("pp_tmpfs", "data dir on tmpfs"), ("pp_disk", "data dir on disk")):
        if "db" in med and key in proj:
            total = proj[key][0]
            count = b.args.peer_tests if key == "pp_tmpfs" else b.args.peer_disk_tests
            est = f" projected from 1 and {count} tests" if count != b.n else ""
            print(f"{verdict(total / med['db'] >= 5)} {b.n:,}-test suite >= 5x faster than "
                  f"pytest-postgresql ({label}): {total / med['db']:.1f}x ({med['db']:.1f} s "
                  f"vs {total:.1f} s{est})")
    if "pp_tmpfs" not in proj:
        print(f"MISS {b.n:,}-test suite >= 5x faster than pytest-postgresql: not measured "
              f"({b.peer.get('pp_tmpfs', 'peers skipped')})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tests", type=int, help="tests per suite (default 1,000)")
    parser.add_argument("--rounds", type=int, help="runs of each dbtest suite (default 2)")
    parser.add_argument("--peer-tests", type=int,
                        help="tests of pytest-postgresql's suite on tmpfs (default 200; "
                        "the N-test time is projected from it when smaller than N)")
    parser.add_argument("--peer-disk-tests", type=int,
                        help="tests of pytest-postgresql's suite on disk (default 10)")
    parser.add_argument("--quick", action="store_true", help="200 tests, 1 round")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers' venv")
    parser.add_argument("--disk-dir", help="a folder on disk for projects and caches")
    args = parser.parse_args(argv)
    args.tests = args.tests or (200 if args.quick else 1000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.peer_tests = min(args.tests, args.peer_tests or (50 if args.quick else 200))
    args.peer_disk_tests = args.peer_disk_tests or (5 if args.quick else 10)
    if args.disk_dir is None:
        args.disk_dir = tempfile.gettempdir()
        if _peers.fs_type(Path(args.disk_dir)) == "tmpfs":
            args.disk_dir = "/var/tmp"
    for k in [k for k in os.environ if k.startswith("DBTEST_")]:
        del os.environ[k]  # the benchmark picks its own backend and cache

    started = time.monotonic()
    b = Bench(args)
    print("# bench_isolation: isolating one test, dbtest vs the peer approaches\n")
    _peers.machine_info(f"{b.binaries.version} ({b.binaries.bindir})", [
        f"server account: {b.account.pw_name if b.account else 'current user'}; projects and "
        f"cache under {b.root} ({_peers.fs_type(b.root)}); {b.n:,} tests per suite; "
        f"{args.rounds} round(s)"])
    env = None
    if not args.no_peers:
        env = _peers.ensure_peer_env(b.account)
        for peer, why in env.missing.items():
            print(f"peer skipped: {peer}: {why}")
        print(f"peers' venv {_peers.PEER_VENV}: " +
              ", ".join(f"{k} {v}" for k, v in env.versions.items()))
    try:
        b.measure_migrations()
        print(f"migrations measured ({time.monotonic() - started:.0f} s)", flush=True)
        b.suites()
        inproc, fresh = in_process(b)
        print(f"in-process measured ({time.monotonic() - started:.0f} s)", flush=True)
        if env is not None and env.usable("pytest-postgresql"):
            b.peer_suites(env)
        elif env is not None:
            b.peer["pp_tmpfs"] = env.missing["pytest-postgresql"]
    finally:
        _peers.print_load("at end")
        _peers.drop_own_spares(b.cache)
        shutil.rmtree(b.root, ignore_errors=True)
    report(b, inproc, fresh)
    print(f"\ntotal benchmark time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
