"""Isolating one test: dbtest side by side with the peers, like for like (issues 4 and 16).

    python benchmarks/bench_isolation.py [--tests N] [--rounds R] [--quick] [--no-peers]

On a generated project whose ``[tool.dbtest] schema`` is a 10-table SQLAlchemy model with
foreign keys (``metadata:models:Base``), every suite has exactly N tests (default 1,000;
``--quick`` 200), each inserting a row, committing and asserting a count; every suite is a
whole pytest process from spawn to exit, run round-robin:

- dbtest: ``db`` and ``async_db`` (savepoints), ``fresh_db`` (a database per test, from the
  pool of pre-cloned databases), and the same bodies without isolation on a database made
  with ``create_all`` (no leak triggers), plus N trivial tests to subtract;
- savepoint against savepoint on one server: dbtest's ``db`` with ``backend = "url"`` and
  pytest-sqla's ``sqla_session``, both against the same TCP server started here;
- clone per test against clone per test: pytest-postgresql's ``postgresql`` fixture (its
  schema loaded into its template, ``--postgresql-load``), by default and with fsync off
  (dbtest's server settings), its data on tmpfs and on disk; the default on disk (fsync on,
  ~0.5-1 s per test) runs in the full run only;
- in-process rows (``_isolation_inproc.py``) and the migration steps of an unchanged rerun.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _isolation_inproc as inproc_mod
import _isolation_project as P
import _peers  # a sibling file, not a package
from _background import drop_namespace
from _driver import FAST_SETTINGS
from _peers import ms, p90, print_table, verdict

BENCHMARK = {"title": "Isolating one test", "order": 20, "quick": ["--quick"], "readme": True,
             "timeout_quick": 900}
REPO = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"template (\S+) \((.*?)\): ((?:re)?built(?: because .*?;|,) (\d+) "
                     r"migration step\(s\) applied|reused \(verified in \d+ ms\)) in (\d+) ms")
SUITES = [  # key, label, the trivial suite it is compared with, peer?
    ("bare", "trivial sync tests", None, False),
    ("bare_async", "trivial async tests", None, False),
    ("noiso", "no isolation: Session on a plain database (no triggers)", "bare", False),
    ("db", "dbtest `db` (savepoint)", "bare", False),
    ("noiso_async", "no isolation: AsyncSession (asyncpg) on the plain database",
     "bare_async", False),
    ("async_db", "dbtest `async_db` (savepoint, asyncpg)", "bare_async", False),
    ("fresh", "dbtest `fresh_db` (a database per test, pre-cloned pool)", "bare", False),
    ("db_url", "dbtest `db` on the shared TCP server (backend url)", "bare", False),
    ("peer_bare", "trivial tests in the peers' venv", None, True),
    ("sqla", "pytest-sqla `sqla_session` (savepoint) on the shared TCP server", "peer_bare",
     True),
    ("pp_fast_tmpfs", "pytest-postgresql `postgresql` (clone per test), fsync off, tmpfs",
     "peer_bare", True),
    ("pp_default_tmpfs", "pytest-postgresql `postgresql`, default settings, tmpfs",
     "peer_bare", True),
    ("pp_fast_disk", "pytest-postgresql `postgresql`, fsync off, disk", "peer_bare", True),
    ("pp_default_disk", "pytest-postgresql `postgresql`, default settings, disk (its "
     "default place)", "peer_bare", True),
]


class Bench:
    """Folders, environment and samples of one run."""

    def __init__(self, args: argparse.Namespace, env: _peers.PeerEnv | None) -> None:
        import pwd

        from dbtest.provision._binaries import find_binaries
        from dbtest.provision._runas import server_account

        self.args, self.env = args, env
        self.n: int = args.tests
        self.binaries = find_binaries()
        acct = server_account()
        self.account = pwd.getpwuid(acct.uid) if acct.switched else None
        self.root = Path(tempfile.mkdtemp(prefix="dbtest-bench-iso-", dir=args.disk_dir))
        os.chmod(self.root, 0o755)  # the server account enters the peers' folders below
        self.cache, self.proj = self.root / "cache", self.root / "proj"
        self.env_vars = {k: v for k, v in os.environ.items()
                         if not k.startswith(("DBTEST_", "PYTEST_"))}
        self.env_vars.update(DBTEST_CACHE_DIR=str(self.cache), DBTEST_BACKEND="local")
        self.times: dict[str, list[float]] = {}
        self.failures: dict[str, str] = {}
        self.checks: list[str] = []
        self.migrations: dict[str, list[tuple[str, int, str]]] = {}
        files = {name: P.test_source(name, self.n) for name in P._BODIES}
        P.write_project(self.proj, "metadata:models:Base", {
            "models.py": P.MODELS, "conftest.py": P.CONFTEST, "test_warm.py": P.WARM_TEST,
            **files})
        sys.path.insert(0, str(self.proj))
        import models  # the generated module

        self.models = models
        self.peer_proj = self.root / "proj-peer"
        self.peer_proj.mkdir()
        for name, text in (("pyproject.toml", P.PEER_PYPROJECT), ("models.py", P.MODELS),
                           ("schema.sql", P.schema_sql(models)),
                           ("test_bare.py", P.test_source("test_bare.py", self.n)),
                           ("test_sqla.py", P.SQLA_TEST.format(n=self.n)),
                           ("test_pp.py", P.PP_TEST.format(n=self.n))):
            (self.peer_proj / name).write_text(text)
        _peers.give_to(self.peer_proj, self.account)
        self.shared: Any = None  # the TCP server dbtest's url suite and pytest-sqla share

    def pytest(self, key: str, cmd: list[str], cwd: Path, env: dict[str, str],
               peer: bool) -> None:
        started = time.perf_counter()
        if peer:
            assert self.env is not None
            proc = self.env.run(cmd, cwd=cwd, env=env, timeout=3600)
        else:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                                  check=False, timeout=3600)
        seconds = time.perf_counter() - started
        if proc.returncode != 0 or f"{self.n} passed" not in proc.stdout:
            why = f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-400:]}"
            self.failures.setdefault(key, why)
            if not peer:
                self.checks.append(f"suite {key}: {why}")
            return
        self.times.setdefault(key, []).append(seconds)

    def measure_migrations(self) -> None:
        """First run vs unchanged rerun, from dbtest's terminal summary line."""
        alembic = self.root / "proj-alembic"
        ini = REPO / "migrations_example" / "alembic.ini"
        P.write_project(alembic, f"alembic:{ini}", {"test_warm.py": P.WARM_TEST})
        for name, proj in (("metadata:models:Base", self.proj),
                           ("alembic:migrations_example/alembic.ini", alembic)):
            for run in ("first run", "unchanged rerun"):
                cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "test_warm.py"]
                # the run before persists its templates in the background: say whether
                # that copy was still under way (the rerun must then wait for it)
                copying = any(self.cache.glob("clusters/*/gen-*.partial-*"))
                started = time.perf_counter()
                proc = subprocess.run(cmd, cwd=proj, env=self.env_vars, capture_output=True,
                                      text=True, check=False)
                seconds = time.perf_counter() - started
                found = SUMMARY.findall(proc.stdout)
                if proc.returncode != 0 or not found:
                    self.checks.append(f"migrations {name} {run}: exit {proc.returncode}, "
                                       f"summary line found: {bool(found)}")
                    continue
                self.migrations.setdefault(name, []).extend(
                    (run, int(m[3] or 0), f"{m[2]} in {m[4]} ms (whole pytest process "
                     f"{seconds:.2f} s; the previous run's copy into the cache "
                     f"{'still under way' if copying else 'done'} when it started)")
                    for m in found)

    def start_shared(self) -> None:
        from dbtest.provision import ephemeral_postgres

        self._shared_cm = ephemeral_postgres(backend="local", cache_dir=self.cache, port=0)
        self.shared = self._shared_cm.__enter__()
        self.shared.create_database("sqla_bench")

    def stop_shared(self) -> None:
        if self.shared is not None:
            self._shared_cm.__exit__(None, None, None)
            self.shared = None

    def round(self, quick: bool) -> None:
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        for key, _, _, peer in SUITES:
            if peer:
                self.peer_suite(key, quick)
                continue
            env = dict(self.env_vars)
            if key == "db_url":
                env.update(DBTEST_BACKEND="url", DBTEST_URL=str(self.shared.url))
            test = "test_db.py" if key == "db_url" else f"test_{key}.py"
            # dbtest's own suites take 2-3 s: one run each swung the per-test differences
            # by +-2 ms (a server start with or without a ready spare), so --quick runs
            # them 3 times per round and reports medians; the peers' long suites run once
            for _ in range(3 if quick else 1):
                self.pytest(key, [*base, test], self.proj, env, peer=False)
            print(f"  suite {key} done", file=sys.stderr, flush=True)

    def peer_suite(self, key: str, quick: bool) -> None:
        env = self.env
        need = "pytest-postgresql" if key.startswith("pp") else \
            "pytest-sqla" if key == "sqla" else None
        if env is None or (need is not None and not env.usable(need)):
            self.failures.setdefault(key, "peers skipped" if env is None else "; ".join(
                env.missing.values()))
            return
        if key == "pp_default_disk" and quick:
            self.failures[key] = "full run only (fsync on: ~0.5-1 s per test)"
            return
        cmd = [str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        extra: dict[str, str] = {}
        bt = None
        if key == "peer_bare":
            cmd.append("test_bare.py")
        elif key == "sqla":
            extra["PYTEST_SQLA_URL"] = self.shared.url_for("sqla_bench")
            cmd.append("test_sqla.py")
        else:
            where = "/dev/shm" if key.endswith("tmpfs") else str(self.peer_proj)
            bt = _peers.private_dir("dbtest-bench-pp-", env.account, where)
            cmd += [f"--basetemp={bt}", f"--postgresql-exec={self.binaries.tool('pg_ctl')}",
                    f"--postgresql-load={self.peer_proj / 'schema.sql'}"]
            if "_fast_" in key:
                cmd.append(f"--postgresql-postgres-options={FAST_SETTINGS}")
            cmd.append("test_pp.py")
        try:
            self.pytest(key, cmd, self.peer_proj, extra, peer=True)
        finally:
            if bt is not None:
                shutil.rmtree(bt, ignore_errors=True)
        print(f"  suite {key} done", file=sys.stderr, flush=True)


# -- report --------------------------------------------------------------------------------
def report(b: Bench, inproc: dict[str, list[float]],
           fresh: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    n, med = b.n, {k: statistics.median(v) for k, v in b.times.items()}
    print(f"\n## pytest suites of exactly {n:,} tests: whole process (median of the runs, "
          f"n per row)\n")
    rows = []
    for key, label, base, _ in SUITES:
        if key not in med:
            rows.append([label, "-", "-", "-", b.failures.get(key, "not run")[:110]])
            continue
        over = "" if base is None or base not in med else \
            f"{(med[key] - med[base]) / n * 1000:+.2f}"
        rows.append([label, f"{med[key]:.2f}", f"{med[key] / n * 1000:.2f}", over,
                     f"n={len(b.times[key])}"])
    print_table(["suite", "total s", "ms per test", "ms per test over its venv's trivial "
                 "suite", ""], rows)
    print("\n## In-process, per test (ms; dbtest's server on tmpfs)\n")
    rows = [[label, ms(statistics.median(v)), ms(p90(v)), str(len(v))]
            for label, v in inproc.items()]
    rows += [[f"{label}: {what}", ms(statistics.median(v)), ms(p90(v)), str(len(v))]
             for label, parts in fresh.items() for what, v in parts.items()]
    print_table(["what", "median ms", "p90 ms", "n"], rows)
    print("\n## Migration steps applied (dbtest's terminal summary line)\n")
    for name, runs in b.migrations.items():
        for run, _, text in runs:
            print(f"- {name}, {run}: {text}")
    return med


def per_test(b: Bench, med: dict[str, float], key: str, base: str) -> float | None:
    if key in med and base in med:
        return float(med[key] - med[base]) / b.n
    return None


def targets(b: Bench, med: dict[str, float], inproc: dict[str, list[float]],
            fresh: dict[str, dict[str, list[float]]]) -> None:
    print("\n## Targets\n")
    n = f"{b.n:,}"
    for kind, limit, iso, plain, sp, pl in (
            ("sync", 1.5, "db", "noiso", inproc_mod.SYNC_SP, inproc_mod.SYNC_PLAIN),
            ("async", 2.0, "async_db", "noiso_async", inproc_mod.ASYNC_SP,
             inproc_mod.ASYNC_PLAIN)):
        if iso in med and plain in med:
            over = (med[iso] - med[plain]) / b.n * 1000
            print(f"{verdict(over <= limit)} savepoint isolation overhead <= {limit} ms per "
                  f"test ({kind}, pytest suites of {n}): {over:.2f} ms (`{iso}` suite minus "
                  f"the same bodies on a database without leak triggers, / {n})")
            if kind == "sync":
                print(f"HEADLINE savepoint isolation (`db`) costs {over:.2f} ms per test over "
                      f"the same insert + commit + count without isolation ({n}-test pytest "
                      f"suites)")
        if sp in inproc and pl in inproc:
            a, c = statistics.median(inproc[sp]), statistics.median(inproc[pl])
            print(f"{verdict((a - c) * 1000 <= limit)} savepoint isolation overhead <= {limit} "
                  f"ms per test ({kind}, in-process): {(a - c) * 1000:.2f} ms ({ms(a)} in a "
                  f"savepoint vs {ms(c)} without)")
            if iso in med and plain in med and kind == "sync":
                total = (med[iso] - med[plain]) / b.n
                print(f"     where the `db` fixture's {ms(total)} ms per test go: savepoint "
                      f"statements {ms(a - c)} + the rest {ms(total - (a - c))} ms (the leak "
                      f"checks at the test's start and end, timed by bench_leaks.py; the "
                      f"connection checkout, session and fixture plumbing)")
    ours, theirs = per_test(b, med, "db_url", "bare"), per_test(b, med, "sqla", "peer_bare")
    if ours is not None and theirs is not None:
        print(f"HEADLINE savepoint against savepoint on the same server: dbtest `db` "
              f"{ours * 1000:.2f} ms per test, pytest-sqla {theirs * 1000:.2f} ms (each over "
              f"its venv's trivial suite, {n} tests)")
    for key, label in (("pp_fast_tmpfs", "fsync off, tmpfs"),
                       ("pp_default_tmpfs", "default settings, tmpfs"),
                       ("pp_fast_disk", "fsync off, disk"),
                       ("pp_default_disk", "default, disk")):
        if "db" not in med or key not in med:
            print(f"MISS `db` >= 5x faster than pytest-postgresql ({label}): not measured "
                  f"({b.failures.get(key, 'peers skipped')})")
            continue
        ours, theirs = per_test(b, med, "db", "bare"), per_test(b, med, key, "peer_bare")
        if ours is not None and theirs is not None and ours <= 0:
            print(f"MISS per-test cost of `db` >= 5x lower than pytest-postgresql's ({label}): "
                  f"not measurable in this run, the `db` suite's cost over its trivial suite "
                  f"is {ours * 1000:.2f} ms per test (within the noise)")
        elif ours is not None and theirs is not None:
            print(f"{verdict(theirs / ours >= 5)} per-test cost of `db` >= 5x lower than "
                  f"pytest-postgresql's clone per test ({label}): {theirs / ours:.1f}x "
                  f"({ours * 1000:.2f} vs {theirs * 1000:.2f} ms per test over each venv's "
                  f"trivial suite, {n}-test suites)")
        ratio = med[key] / med["db"]
        if b.n >= 1000:
            print(f"{verdict(ratio >= 5)} {n}-test `db` suite >= 5x faster than "
                  f"pytest-postgresql's clone per test ({label}): {ratio:.1f}x "
                  f"({med['db']:.1f} s vs {med[key]:.1f} s, both {n} tests)")
        else:  # the target is for 1,000-test suites: a start cost weighs more in fewer tests
            print(f"(whole {n}-test suites, {label}: `db` {med['db']:.1f} s, "
                  f"pytest-postgresql {med[key]:.1f} s, {ratio:.1f}x; the 5x target for "
                  f"1,000-test suites is judged in the full run)")
        if key == "pp_fast_tmpfs":
            print(f"HEADLINE {n} tests: dbtest `db` {med['db']:.1f} s, pytest-postgresql "
                  f"(clone per test, fsync off, tmpfs) {med[key]:.1f} s: "
                  f"{med[key] / med['db']:.1f}x")
    clone, theirs = per_test(b, med, "fresh", "bare"), per_test(b, med, "pp_fast_tmpfs",
                                                                "peer_bare")
    if clone is not None and theirs is not None:
        print(f"HEADLINE a database per test: dbtest `fresh_db` {clone * 1000:.1f} ms per test, "
              f"pytest-postgresql `postgresql` (fsync off, tmpfs) {theirs * 1000:.1f} ms "
              f"({theirs / clone:.1f}x)")
    pooled = fresh.get(inproc_mod.FRESH_POOL, {}).get("wait")
    if pooled:
        print(f"{verdict(statistics.median(pooled) <= 0.005)} fresh_db median wait <= 5 ms with "
              f"the pool (in-process): {ms(statistics.median(pooled))} ms (p90 "
              f"{ms(p90(pooled))})")
    for name, runs in b.migrations.items():
        first = [s for r, s, _ in runs if r == "first run"]
        rerun = [s for r, s, _ in runs if r != "first run"]
        ok = bool(rerun) and all(s == 0 for s in rerun)
        print(f"{verdict(ok)} unchanged rerun applies 0 migrations ({name}): first run "
              f"{sum(first)} step(s), rerun {sum(rerun)}")
        if not ok:
            b.checks.append(f"unchanged rerun of {name} applied {sum(rerun)} step(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tests", type=int, help="tests per suite (default 1,000)")
    parser.add_argument("--rounds", type=int, help="runs of each suite (default 2)")
    parser.add_argument("--quick", action="store_true", help="200 tests, 1 round")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers' venv")
    parser.add_argument("--disk-dir", help="a folder on disk for projects and caches")
    args = parser.parse_args(argv)
    args.tests = args.tests or (200 if args.quick else 1000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.disk_dir is None:
        args.disk_dir = tempfile.gettempdir()
        if _peers.fs_type(Path(args.disk_dir)) == "tmpfs":
            args.disk_dir = "/var/tmp"
    for k in [k for k in os.environ if k.startswith("DBTEST_") and "BENCH" not in k]:
        del os.environ[k]  # the benchmark picks its own backend and cache
    started = time.monotonic()
    from dbtest.provision._runas import server_account

    acct = server_account()
    import pwd

    env = None if args.no_peers else _peers.ensure_peer_env(
        pwd.getpwuid(acct.uid) if acct.switched else None)
    b = Bench(args, env)
    print("# bench_isolation: isolating one test, dbtest vs the peers, like for like\n")
    _peers.machine_info(f"{b.binaries.version} ({b.binaries.bindir})", [
        f"server account: {b.account.pw_name if b.account else 'current user'}; projects and "
        f"cache under {b.root} ({_peers.fs_type(b.root)}); exactly {b.n:,} tests per suite; "
        f"{args.rounds} round(s)"])
    if env is not None:
        for peer, why in env.missing.items():
            print(f"- peer skipped: {peer}: {why}")
        print(f"- peers' venv {_peers.PEER_VENV}: " +
              ", ".join(f"{k} {v}" for k, v in env.versions.items()))
    inproc: dict[str, list[float]] = {}
    fresh: dict[str, dict[str, list[float]]] = {}
    try:
        b.measure_migrations()
        print(f"migrations measured ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        b.start_shared()
        try:
            for r in range(args.rounds):  # round-robin: load hits every suite alike
                b.round(args.quick)
                print(f"suites, round {r + 1}/{args.rounds} done "
                      f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        finally:
            b.stop_shared()
        inproc, fresh = inproc_mod.in_process(b.cache, b.proj, b.models, args.quick)
        print(f"in-process measured ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    finally:
        _peers.print_load("at end")
        _peers.drop_own_spares(b.cache)
        shutil.rmtree(b.root, ignore_errors=True)
        drop_namespace(b.cache)
    med = report(b, inproc, fresh)
    targets(b, med, inproc, fresh)
    for check in b.checks:
        print(f"FAIL {check}")
    print(f"\ntotal benchmark time {time.monotonic() - started:.0f} s")
    return 1 if b.checks else 0


if __name__ == "__main__":
    sys.exit(main())
