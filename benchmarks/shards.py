"""Shard drill (issue 19): many CI shards on one shared PostgreSQL, some killed mid-run.

    python benchmarks/shards.py [--shards N] [--quick] [--legacy] [--append RESULTS.md]

One server, started by dbtest itself (``ephemeral_postgres(backend="local", port=0)``,
TCP with a password); every shard is a ``pytest`` run of a small throwaway project with
``DBTEST_URL`` pointing at it, in a UTS and pid namespace of its own
(``unshare --uts --pid --fork --mount-proc``) with the same host name ``ci-runner``, so
pids and host names in marks repeat exactly as on containerised CI runners. Shards start
``--stagger`` seconds apart, so later ones start (and run their janitor) while earlier
ones run; every third shard uses ``-n 2``; every fourth is killed with ``kill -9`` (its
whole pid namespace) a moment after its first test. A last shard starts after all others
ended, so every killed shard has a "next run".

The server logs every DDL statement with the connection's application name (each run's
admin connection is ``dbtest run <token>``) and an epoch time stamp; from the log the
drill reads every database's mark (token), who dropped it and when, and the template
builds. A monitor polls ``pg_stat_activity`` for the peak of client connections.

Reported: failures not caused by kills (target 0), live databases dropped by another run
(target 0), killed shards' databases still there when the next shard's first test runs
(target 0), template builds (target 1), peak connections, time to first test per shard.
``--legacy`` runs the shards with marks without run tokens (the old host/pid rule), to
show what the drill catches. Needs root (for ``unshare``) and local PostgreSQL binaries.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import machine_info, print_load, print_table, verdict  # sibling file

HOSTNAME = "ci-runner"
LOG_PREFIX = "%n [%p] %a: "
LINE = re.compile(r"^(\d+\.\d+) \[(\d+)\] (.*?): LOG:  statement: (.*)$")
COMMENT = re.compile(r'^COMMENT ON DATABASE "([^"]+)" IS \'dbtest:(.*)\'$')
DROP = re.compile(r'^DROP DATABASE IF EXISTS "([^"]+)"')
CREATE = re.compile(r'^CREATE DATABASE "([^"]+)"')
TOKEN = re.compile(r'"run": "([0-9a-f]{16})"')

PYPROJECT = """\
[tool.dbtest]
schema = "sql:schema.sql"
"""
SCHEMA = "-- shard drill {token}\nCREATE TABLE items (id serial PRIMARY KEY, n int NOT NULL);\n"
CONFTEST = '''\
import os, time

import pytest

if os.environ.get("SHARD_LEGACY"):  # marks without a run token: the old host/pid rule
    from dbtest._liveness import RunLease

    RunLease.mark = property(lambda self: {})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if not getattr(item.config, "_shard_seen", False):
        item.config._shard_seen = True
        from dbtest.plugin import workspace_for

        ws = workspace_for(item.config)
        with open(os.environ["SHARD_OUT"], "a") as fh:
            fh.write(f"{time.time():.3f} {ws.run_token} {ws.run_id}_{ws.worker}\\n")
'''
TESTS = '''\
import time

import pytest
from sqlalchemy import text


@pytest.mark.parametrize("i", range({n}))
def test_savepoint(db, i):
    db.execute(text("INSERT INTO items (n) VALUES (:i)"), {{"i": i}})
    time.sleep({pause})
    assert db.execute(text("SELECT count(*) FROM items")).scalar() == 1


@pytest.mark.dbtest(isolation="fresh")
@pytest.mark.parametrize("i", range({fresh}))
def test_fresh(fresh_db, i):
    with fresh_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO items (n) VALUES (:i)"), {{"i": i}})
    time.sleep({pause})
    with fresh_db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 1
'''


@dataclass
class Shard:
    index: int
    workers: int
    kill: bool
    out: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ended: float = 0.0
    killed_at: float | None = None
    rc: int | None = None
    #: per pytest process: (first test's time, run token, "<run id>_<worker>")
    firsts: list[tuple[float, str, str]] = field(default_factory=list)

    def read_firsts(self) -> None:
        try:
            lines = [ln.split() for ln in self.out.read_text().splitlines()]
        except OSError:
            return
        self.firsts = [(float(w[0]), w[1], w[2]) for w in lines if len(w) == 3]

    @property
    def tokens(self) -> set[str]:
        return {t for _, t, _ in self.firsts}

    @property
    def processes(self) -> set[str]:
        return {p for _, _, p in self.firsts}

    @property
    def first_test(self) -> float | None:
        return min((t for t, _, _ in self.firsts), default=None)

    def outcome(self) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return text[-1] if text else "(no output)"


def write_project(folder: Path, tests: int, fresh: int, pause: float) -> None:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (folder / "schema.sql").write_text(SCHEMA.format(token=secrets.token_hex(8)))
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_shard.py").write_text(TESTS.format(n=tests, fresh=fresh, pause=pause))


def start_shard(shard: Shard, project: Path, env: dict[str, str]) -> None:
    cmd = ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child",
           "sh", "-c", f'hostname {HOSTNAME} && exec "$0" "$@"',
           sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "-n", str(shard.workers) if shard.workers > 1 else "0"]
    shard.started = time.time()
    with shard.log.open("wb") as log:
        shard.proc = subprocess.Popen(cmd, cwd=project, stdout=log, stderr=subprocess.STDOUT,
                                      env={**env, "SHARD_OUT": str(shard.out)},
                                      start_new_session=True)


class Monitor(threading.Thread):
    """Peak client connections on the server (its own connection excluded)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.peak, self.stop = dsn, 0, threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type"
                                   " = 'client backend' AND pid <> pg_backend_pid()").fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                self.stop.wait(0.05)


@dataclass
class Ledger:
    """What the server log says about per-run databases."""

    token: dict[str, str] = field(default_factory=dict)  # database -> token in its mark
    created: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, tuple[float, str]] = field(default_factory=dict)  # -> (time, by)
    by: dict[str, str] = field(default_factory=dict)  # database -> token that created it
    builds: int = 0

    def owner_key(self, name: str) -> str | None:
        """``<run id>_<worker>`` of a worker or fresh database (dbtest_w_<run>_<worker>_...)."""
        parts = name.split("_")
        return "_".join(parts[2:4]) if len(parts) > 4 and parts[1] in ("w", "f") else None


def read_log(path: Path) -> Ledger:
    ledger = Ledger()
    for line in path.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if not match:
            continue
        when, app, statement = float(match[1]), match[3], match[4]
        by = app.removeprefix("dbtest run ") if app.startswith("dbtest run ") else ""
        if (m := COMMENT.match(statement)) and (t := TOKEN.search(m[2])):
            ledger.token[m[1]] = t[1]
        elif m := CREATE.match(statement):
            ledger.created.setdefault(m[1], when)
            ledger.by.setdefault(m[1], by)
            ledger.builds += m[1].startswith("dbtest_tpl_") and m[1].endswith("_build")
        elif m := DROP.match(statement):
            ledger.dropped[m[1]] = (when, by)
    return ledger


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="4 shards, short tests (CI)")
    parser.add_argument("--stagger", type=float, default=None, help="seconds between starts")
    parser.add_argument("--legacy", action="store_true", help="marks without run tokens")
    parser.add_argument("--append", type=Path, help="also append the report to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the shards' output and the server log (path printed)")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("shards.py needs root and unshare(1) for the shards' namespaces", file=sys.stderr)
        return 2
    n = 4 if args.quick else args.shards
    tests, fresh, pause = (5, 2, 0.2) if args.quick else (10, 3, 0.25)
    stagger = args.stagger if args.stagger is not None else (0.7 if args.quick else 0.6)
    scratch = Path(tempfile.mkdtemp(prefix="dbtest-shards-"))
    try:
        report = drill(n, tests, fresh, pause, stagger, args.legacy, scratch)
    finally:
        if args.keep:
            print(f"kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.append:  # plain lines become a list, so Markdown keeps them apart
        lines = [ln if not ln or ln.startswith(("#", "|")) else f"- {ln}"
                 for ln in report.splitlines()]
        with args.append.open("a") as fh:
            fh.write("\n" + "\n".join(lines) + "\n")
    return 0 if "MISS" not in report else 1


def drill(n: int, tests: int, fresh: int, pause: float, stagger: float, legacy: bool,
          scratch: Path) -> str:
    import dbtest

    project = scratch / "project"
    write_project(project, tests, fresh, pause)
    buffer = io.StringIO()
    with dbtest.ephemeral_postgres(backend="local", port=0) as server, \
            redirect_stdout(Tee(buffer)):
        import psycopg

        with psycopg.connect(server.dsn, autocommit=True) as conn:
            for key, value in (("log_statement", "ddl"), ("log_min_messages", "log"),
                               ("log_line_prefix", LOG_PREFIX)):
                conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        log_path = Path(server.details["data_dir"]).parent / "postgres.log"
        print(f"## Shard drill (`shards.py`, issue 19): {n} shards on one server"
              f"{' (--legacy: marks without run tokens)' if legacy else ''}")
        print()
        machine_info(server.version, [
            f"shards: {n} + 1 last, {stagger} s apart, host name {HOSTNAME!r} in each, "
            f"own pid namespace; every 3rd with -n 2, every 4th killed (kill -9); "
            f"{tests} savepoint + {fresh} fresh_db tests of {pause} s each"])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DBTEST_", "PYTEST_"))}
        env.update(DBTEST_URL=server.url, PYTHONDONTWRITEBYTECODE="1",
                   DBTEST_CACHE_DIR=str(scratch / "cache"), **({"SHARD_LEGACY": "1"}
                                                               if legacy else {}))
        monitor = Monitor(server.dsn)
        monitor.start()
        shards = [Shard(i, 2 if i % 3 == 2 else 1, i % 4 == 1, scratch / f"s{i}.out",
                        scratch / f"s{i}.log") for i in range(n)]
        began = time.time()
        run_shards(shards, project, env, stagger)
        last = Shard(n, 1, False, scratch / "last.out", scratch / "last.log")
        run_shards([last], project, env, 0)
        shards.append(last)
        monitor.stop.set()
        monitor.join()
        time.sleep(0.3)  # the log writer
        shutil.copy(log_path, scratch / "postgres.log")
        ledger = read_log(log_path)
        print_load("at end")
        print(f"wall time: {time.time() - began:.1f} s")
        print()
        summarise(shards, ledger, monitor.peak)
    return buffer.getvalue()


class Tee(io.TextIOBase):
    """Print to the terminal and keep a copy for ``--append``."""

    def __init__(self, copy: io.StringIO) -> None:
        self.copy, self.out = copy, sys.stdout

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


def run_shards(shards: list[Shard], project: Path, env: dict[str, str], stagger: float) -> None:
    """Start the shards ``stagger`` s apart; kill the marked ones soon after their first
    test; wait for the rest."""
    pending = list(shards)
    next_start = time.time()
    while pending or any(s.proc and s.rc is None for s in shards):
        now = time.time()
        if pending and now >= next_start:
            start_shard(pending.pop(0), project, env)
            next_start = now + stagger
        for s in shards:
            if s.proc is None or s.rc is not None:
                continue
            s.read_firsts()
            # every process of the shard has run a test (so its databases are known)
            ready = s.first_test and (len(s.firsts) >= s.workers or now > s.first_test + 20)
            if s.kill and s.killed_at is None and ready and now > max(
                    t for t, _, _ in s.firsts) + 0.5:
                s.killed_at = time.time()
                os.killpg(s.proc.pid, signal.SIGKILL)
            rc = s.proc.poll()
            if rc is not None:
                s.rc, s.ended = rc, time.time()
                s.read_firsts()
        time.sleep(0.05)


def summarise(shards: list[Shard], ledger: Ledger, peak: int) -> None:
    owner = {t: s for s in shards for t in s.tokens}  # a process's token -> its shard
    process = {p: s for s in shards for p in s.processes}  # "<run id>_<worker>" -> shard
    token_of = {p: t for s in shards for _, t, p in s.firsts}
    killed = [s for s in shards if s.killed_at is not None]
    failed = [s for s in shards if s.killed_at is None and s.rc != 0]
    live_dropped, left = [], []
    # the owner of a database: from its name (marks without tokens say nothing reliable)
    owned = {name: key for name in ledger.created if (key := ledger.owner_key(name))}
    for name, (when, by) in ledger.dropped.items():
        key = owned.get(name)
        shard = process.get(key or "")
        if shard is None or by == token_of.get(key or ""):
            continue  # not a run's database, or dropped by its own process
        dead_since = shard.killed_at or shard.ended
        if when < dead_since - 0.05:
            live_dropped.append(f"{name} (shard {shard.index}, dropped by "
                                f"{owner[by].index if by in owner else by or '?'})")
    for k in killed:
        assert k.killed_at is not None
        later = [s for s in shards if s.started > k.killed_at and s.first_test]
        check = min((s.first_test for s in later if s.first_test), default=None)
        mine = [d for d, key in owned.items() if key in k.processes]
        for name in mine:
            gone = ledger.dropped.get(name, (float("inf"), ""))[0]
            if check is None or gone > check:
                left.append(f"{name} (shard {k.index})")
    firsts = [s.first_test - s.started for s in shards if s.first_test]
    print_table(["shard", "-n", "fate", "first test (s)", "last line"], [
        [str(s.index), str(s.workers),
         "killed" if s.killed_at else ("ok" if s.rc == 0 else f"rc {s.rc}"),
         f"{s.first_test - s.started:.1f}" if s.first_test else "-",
         "" if s.killed_at else s.outcome()[:70]] for s in shards])
    print()
    reaped = sum(1 for d, (_, by) in ledger.dropped.items()
                 if d in owned and token_of.get(owned[d]) != by)
    remaining = [d for d in owned if d not in ledger.dropped]
    print(f"per-run databases: {len(owned)} ({len(ledger.token)} with a run token in the "
          f"mark); dropped by another run: {reaped}; left on the server at the end: "
          f"{len(remaining)}{_list(remaining)}")
    if firsts:
        print(f"time to first test: median {statistics.median(firsts):.1f} s, "
              f"max {max(firsts):.1f} s (from the shard's start, interpreter included)")
    print()
    print_table(["target", "result", ""], [
        ["failures not caused by kills = 0", str(len(failed)) + _names(failed),
         verdict(not failed)],
        ["live databases dropped = 0", str(len(live_dropped)) + _list(live_dropped),
         verdict(not live_dropped)],
        ["killed shards' databases left after the next run starts = 0",
         f"{len(left)} (of {len(killed)} killed shards)" + _list(left), verdict(not left)],
        ["template builds = 1", str(ledger.builds), verdict(ledger.builds == 1)],
        ["peak server connections", f"{peak} (max_connections 300)", ""],
    ])


def _names(shards: list[Shard]) -> str:
    return f": shards {', '.join(str(s.index) for s in shards)}" if shards else ""


def _list(items: list[str]) -> str:
    return f": {'; '.join(items[:4])}{' ...' if len(items) > 4 else ''}" if items else ""


if __name__ == "__main__":
    sys.exit(main())
