"""Scaffolding for the fault drills: a throwaway project, pytest (or ``dbtest``) run in a
child process, and the checks every drill makes afterwards.

A drill writes a small project into ``tmp_path``, starts ``python -m pytest`` on it with a
private ``DBTEST_CACHE_DIR``, waits until the child says (by writing a file) that it reached
the point to break, breaks it, and then checks: no server process of that run is left after
5 s, the next run starts cleanly and reaps what was left, and the databases dbtest does not
own are intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

#: how long a killed run's server may outlive it (issue 3: "stops it within 5 s")
GRACE_S = 5.0


def load_factor() -> float:
    """How much slower than a quiet machine this one is now: the 1-minute load average
    per CPU, at least 1. Every drill limit is multiplied by it (issue 12: on a 2-core
    machine shared with other test runs, a drill took 26 s against a 20 s limit at load
    11), and each failure message says so."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def scaled(seconds: float) -> float:
    """``seconds`` times :func:`load_factor` (measured now)."""
    return seconds * load_factor()


def limit_note(seconds: float) -> str:
    """How a limit was scaled, for failure messages."""
    return (f"limit {seconds:.0f} s x {load_factor():.1f} for load "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"

[tool.dbtest]
schema = "{schema}"
"""

# A schema callable that, when DRILL_BUILD_SIGNAL names a file, writes it and sleeps: the
# drill kills the run while the template is half-built.
SCHEMA = '''\
"""Drill schema: one table; can stall half-way through the build."""
import os
import time
from pathlib import Path

from sqlalchemy import text


def build(connection):
    connection.execute(text("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)"))
    signal_file = os.environ.get("DRILL_BUILD_SIGNAL")
    if signal_file:
        Path(signal_file).write_text(str(os.getpid()))
        time.sleep(60)
'''

# A database test that, when DRILL_TEST_SIGNAL names a file, writes it and then keeps
# querying for up to 60 s, or until the file DRILL_TEST_GO names exists (the drill breaks
# something meanwhile).
TESTS = '''\
import os
import time
from pathlib import Path

from sqlalchemy import text


def test_insert_and_count(db):
    db.execute(text("INSERT INTO items (name) VALUES ('drill')"))
    assert db.execute(text("SELECT count(*) FROM items")).scalar() == 1
    signal_file = os.environ.get("DRILL_TEST_SIGNAL")
    if signal_file:
        Path(signal_file).write_text(str(os.getpid()))
        go = Path(os.environ.get("DRILL_TEST_GO", "/nonexistent"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not go.exists():
            assert db.execute(text("SELECT count(*) FROM items")).scalar() == 1
            time.sleep(0.05)


def test_second(db):
    assert db.execute(text("SELECT count(*) FROM items")).scalar() == 0
'''


# -- processes ------------------------------------------------------------------------------
def _start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (tells a process from a later one with its pid);
    ``None`` when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


@dataclass(frozen=True)
class Proc:
    """A process, pinned by its start time so that a recycled pid is not mistaken for it."""

    pid: int
    started: int
    what: str

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


def registrations(cache: Path, owner: int | None = None) -> list[dict[str, Any]]:
    """The servers in ``cache``'s registry (``<cache>/run/*.json``), of ``owner`` if given."""
    regs = []
    for entry in sorted((cache / "run").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            reg = json.loads(entry.read_text())
            if owner is None or reg["owner_pid"] == owner:
                regs.append(reg)
    return regs


def server_processes(cache: Path, owner: int | None = None) -> list[Proc]:
    """Every process of every server in ``cache``'s registry (of ``owner``): the
    postmaster, its children (backends, checkpointer, ...) and anything whose command line
    names its run folder (the watchdogs)."""
    found: dict[int, Proc] = {}
    for reg in registrations(cache, owner):
        found.update({p.pid: p for p in processes_of(reg["postmaster_pid"], reg["run_dir"])})
    return sorted(found.values(), key=lambda p: p.pid)


def _names(cmdline: bytes, folder: str) -> bool:
    """Whether an argument of ``cmdline`` is ``folder`` or a path inside it."""
    name = folder.rstrip("/").encode()
    return any(arg == name or arg.startswith(name + b"/") for arg in cmdline.split(b"\0"))


def processes_of(postmaster: int, run_dir: str) -> list[Proc]:
    """The postmaster ``postmaster``, its children, and processes naming ``run_dir``."""
    out = []
    for pid in _all_pids():
        cmd = _cmdline(pid)
        if pid == postmaster or _ppid(pid) == postmaster or _names(cmd, run_dir):
            started = _start_time(pid)
            if started is not None:
                out.append(Proc(pid, started, cmd.replace(b"\0", b" ").decode()[:120]))
    return out


def postgres_naming(folder: str) -> list[Proc]:
    """Live processes whose command line names something inside ``folder`` (``ps`` filtered
    on the data dir)."""
    out = []
    for pid in _all_pids():
        if pid != os.getpid() and _names(_cmdline(pid), folder):
            started = _start_time(pid)
            if started is not None:
                out.append(Proc(pid, started, _cmdline(pid).replace(b"\0", b" ").decode()[:120]))
    return out


def wait_gone(procs: list[Proc], timeout: float = GRACE_S) -> list[Proc]:
    """Wait up to ``timeout`` (scaled by load) for ``procs`` to exit; returns the ones
    still alive."""
    deadline = time.monotonic() + scaled(timeout)
    left = [p for p in procs if p.alive()]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if p.alive()]
    return left


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             run: Run | None = None) -> None:
    """Poll ``predicate`` until true; fail (with the run's output) after ``timeout``
    (scaled by load)."""
    limit = timeout
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if run is not None and run.proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {run.proc.returncode}) before {what}:\n"
                                 f"{run.output()}")
        if time.monotonic() > deadline:
            extra = f"\n{run.output()}" if run is not None else ""
            raise AssertionError(f"timed out ({limit_note(limit)}) waiting for {what}{extra}")
        time.sleep(0.02)


# -- projects and runs ----------------------------------------------------------------------
@dataclass
class Run:
    """A child process whose output goes to a file (no pipe to fill up)."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout: float) -> int:
        """The exit code; fails (and kills the child) if it runs longer than ``timeout``
        (scaled by load)."""
        try:
            return self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the run did not end ({limit_note(timeout)}): hung:\n"
                                 f"{self.output()}") from None

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Project:
    """A throwaway pytest project in ``root`` using dbtest with a private cache."""

    def __init__(self, root: Path, cache: Path, *, schema: str = "callable:drill_schema:build",
                 url: str | None = None, backend: str | None = None) -> None:
        self.root, self.cache, self.url, self.backend = root, cache, url, backend
        root.mkdir(parents=True, exist_ok=True)
        self.write("pyproject.toml", PYPROJECT.format(schema=schema))
        # a token of its own: each project's template is new, so its first run builds it
        self.write("drill_schema.py", SCHEMA + f"\n# project {secrets.token_hex(8)}\n")
        self.write("test_drill.py", TESTS)
        self._runs: list[Run] = []
        self._count = 0

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        """The parent's environment without any DBTEST_*/PYTEST_* variable (the outer run
        may be an xdist worker), plus this project's settings and ``extra``."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DBTEST_", "PYTEST_", "DRILL_"))}
        env["DBTEST_CACHE_DIR"] = str(self.cache)
        if self.url:
            env["DBTEST_URL"] = self.url
        if self.backend:
            env["DBTEST_BACKEND"] = self.backend
        env.update(extra)
        return env

    def start(self, *args: str, **env: str) -> Run:
        """Start ``python -m pytest -p no:cacheprovider ARGS`` with ``env`` added."""
        return self.start_command((sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
                                  *args, **env)

    def start_command(self, command: tuple[str, ...], *args: str, **env: str) -> Run:
        """Start ``command + ARGS`` in the project with ``env`` added."""
        self._count += 1
        log = self.root / f"run-{self._count}.log"
        cmd = [*command, *args]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=self.root, env=self.env(**env), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    # its own session: killing it kills nothing else
                                    start_new_session=True)
        run = Run(proc, log)
        self._runs.append(run)
        return run

    def run(self, *args: str, timeout: float = 60.0, **env: str) -> tuple[int, str]:
        """Run to completion; returns the exit code and the output."""
        run = self.start(*args, **env)
        return run.wait(timeout), run.output()

    def signal_file(self, name: str) -> Path:
        path = self.root / f"{name}.signal"
        path.unlink(missing_ok=True)
        return path

    def close(self) -> None:
        """Kill whatever run a failed drill left running."""
        for run in self._runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()


def assert_clean_run(project: Project, *args: str, expect_built: bool | None = None) -> str:
    """The next run passes; returns its output. ``expect_built`` checks whether it had to
    build the template (``True``) or found it ready (``False``)."""
    rc, out = project.run("-q", *args)
    assert rc == 0, f"the next run failed (rc {rc}):\n{out}"
    assert "already exists" not in out, out
    if expect_built is not None:
        word = "built" if expect_built else "reused"
        assert f": {word}" in out, f"expected the template to be {word}:\n{out}"
    return out


def assert_registry_empty(cache: Path) -> None:
    """No registry entry is left (each names a server that still runs or was not reaped)."""
    left = sorted(p.name for p in (cache / "run").glob("*.json"))
    assert not left, f"registry entries left in {cache / 'run'}: {left}"


def assert_none_left(procs: list[Proc], what: str) -> None:
    left = wait_gone(procs)
    assert not left, f"{what}: still running ({limit_note(GRACE_S)}): " + "; ".join(
        f"{p.pid} {p.what}" for p in left)


# -- a server dbtest does not own, with data that must survive every drill -------------------
class Precious:
    """Databases and rows on an outside server that dbtest never made."""

    DATABASE = "precious"

    def __init__(self, dsn_for: Callable[[str], str]) -> None:
        self.dsn_for = dsn_for
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE precious")
            conn.execute("CREATE TABLE IF NOT EXISTS keep_admin (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO keep_admin SELECT g, md5(g::text) FROM "
                         "generate_series(1, 100) g ON CONFLICT DO NOTHING")
        with psycopg.connect(dsn_for(self.DATABASE), autocommit=True) as conn:
            conn.execute("CREATE TABLE keep (id int PRIMARY KEY, note text NOT NULL)")
            conn.execute("INSERT INTO keep SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
        self.expected = self.state()

    def state(self) -> dict[str, Any]:
        """Foreign databases, and a checksum of every row in the two tables."""
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            foreign = sorted(r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND "
                "coalesce(shobj_description(oid, 'pg_database'), '') NOT LIKE 'dbtest:%'"))
            admin = conn.execute("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) "
                                 "FROM keep_admin").fetchone()
        with psycopg.connect(self.dsn_for(self.DATABASE), autocommit=True) as conn:
            keep = conn.execute("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) "
                                "FROM keep").fetchone()
        return {"foreign databases": foreign, "postgres.keep_admin": admin, "precious.keep": keep}

    def assert_intact(self) -> None:
        """Every foreign database is still there, the two tables hold the same rows."""
        now = self.state()
        gone = set(self.expected["foreign databases"]) - set(now["foreign databases"])
        assert not gone, f"databases dbtest does not own are gone: {sorted(gone)}"
        for table in ("postgres.keep_admin", "precious.keep"):
            assert now[table] == self.expected[table], f"rows of {table} changed"

    def dbtest_databases(self) -> dict[str, dict[str, Any]]:
        """dbtest's databases on the server, with their marks."""
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            rows = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') "
                                "FROM pg_database").fetchall()
        return {name: json.loads(comment[len("dbtest:"):]) for name, comment in rows
                if comment and comment.startswith("dbtest:")}

    def sessions_of(self, pid: int) -> list[str]:
        """Sessions still open on databases marked with ``pid`` as their owner."""
        names = [n for n, m in self.dbtest_databases().items() if m.get("pid") == pid]
        if not names:
            return []
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            return [f"{r[0]} on {r[1]}" for r in conn.execute(
                "SELECT pid, datname FROM pg_stat_activity WHERE datname = ANY(%s)", (names,))]
