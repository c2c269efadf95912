"""Fault drills: ``kill -9`` of a pytest run during the template build and during a test, of
``dbtest seed``, and of the server under a running test.

Each drill runs a real pytest (or ``dbtest``) child process on a throwaway project, breaks it
at a point the child signals by writing a file, then checks that no server process of that
run is left after 5 s, that the next run starts cleanly and reaps what was left, and that the
data dbtest does not own is intact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from _kit import (
    GRACE_S,
    Precious,
    Project,
    assert_clean_run,
    assert_none_left,
    assert_registry_empty,
    limit_note,
    postgres_naming,
    processes_of,
    registrations,
    scaled,
    server_processes,
    wait_for,
)

from dbtest.provision._binaries import find_binaries
from dbtest.provision._local import LocalCluster
from dbtest.provision._server import PostgresServer

Outside = tuple[PostgresServer, Precious]


def _run_dirs(cache: Path, owner: int) -> list[str]:
    return [reg["run_dir"] for reg in registrations(cache, owner)]


def _assert_run_dirs_gone(run_dirs: list[str]) -> None:
    for run_dir in run_dirs:
        folder = Path(run_dir)
        wait_for(lambda: not folder.exists(), GRACE_S, f"{run_dir} to be removed")  # noqa: B023
        assert not postgres_naming(run_dir), postgres_naming(run_dir)


# -- kill -9 of pytest, local backend ---------------------------------------------------------
@pytest.mark.parametrize("when", ["template build", "test"])
def test_kill9_of_pytest_local(project: Callable[..., Project], cache: Path, when: str) -> None:
    """The watchdog stops the killed run's server within 5 s and deletes its folder; the
    next run builds the template again (the half-built one died with that server)."""
    proj = project(backend="local")
    reached = proj.signal_file("reached")
    env = {"DRILL_BUILD_SIGNAL" if when == "template build" else "DRILL_TEST_SIGNAL":
           str(reached)}
    run = proj.start("-q", **env)
    wait_for(reached.exists, 30, f"the run to reach the {when}", run)
    procs = server_processes(cache, run.proc.pid)
    run_dirs = _run_dirs(cache, run.proc.pid)
    assert len(run_dirs) == 1 and any("postgres" in p.what for p in procs), procs

    run.kill9()

    assert_none_left(procs, f"server of a run killed during the {when}")
    _assert_run_dirs_gone(run_dirs)
    assert_registry_empty(cache)
    assert_clean_run(proj, expect_built=True)
    assert_registry_empty(cache)


def test_kill9_of_pytest_and_its_watchdog_next_run_reaps(project: Callable[..., Project],
                                                         cache: Path) -> None:
    """When the watchdog dies too (an OOM killer, ``kill -9 -1``), the server stays up
    until the next run, whose start reaps it."""
    proj = project(backend="local")
    reached = proj.signal_file("reached")
    run = proj.start("-q", DRILL_TEST_SIGNAL=str(reached))
    wait_for(reached.exists, 30, "the run to reach the test", run)
    (reg,) = registrations(cache, run.proc.pid)
    procs = server_processes(cache, run.proc.pid)
    watchdogs = [p for p in procs if "dbtest.provision._lifetime" in p.what]
    assert watchdogs, procs
    for dog in watchdogs:
        os.kill(dog.pid, signal.SIGKILL)
    run.kill9()
    time.sleep(1.0)
    postmaster = [p for p in procs if p.pid == reg["postmaster_pid"]]
    assert postmaster and postmaster[0].alive(), "nothing was left to reap: drill broken"

    assert_clean_run(proj)  # its start reaps the orphan

    assert_none_left(procs, "orphaned server after the next run started")
    assert_registry_empty(cache)


# -- kill -9 of pytest, url backend (a server dbtest does not own) ----------------------------
def _per_process(precious: Precious, pid: int) -> dict[str, str]:
    """dbtest's databases on the outside server that belong to process ``pid`` alone (all
    but ready templates, which later runs share): name -> purpose[-state]."""
    found = {}
    for name, mark in precious.dbtest_databases().items():
        kind = mark["purpose"] + (f"-{mark['state']}" if "state" in mark else "")
        if mark.get("pid") == pid and kind != "template-ready":
            found[name] = kind
    return found


@pytest.mark.parametrize("when", ["template build", "test"])
def test_kill9_of_pytest_url(project: Callable[..., Project], cache: Path, outside: Outside,
                             when: str) -> None:
    """On a shared server the killed run's sessions end at once; its half-built template or
    worker database is dropped by the next run, which passes; nothing else is touched."""
    server, precious = outside
    proj = project(url=server.url)
    reached = proj.signal_file("reached")
    env = {"DRILL_BUILD_SIGNAL" if when == "template build" else "DRILL_TEST_SIGNAL":
           str(reached)}
    run = proj.start("-q", **env)
    wait_for(reached.exists, 30, f"the run to reach the {when}", run)
    killed = run.proc.pid
    left = _per_process(precious, killed)
    assert set(left.values()) == ({"template-building"} if when == "template build"
                                  else {"worker"}), left

    run.kill9()

    wait_for(lambda: not precious.sessions_of(killed), GRACE_S,
             "the killed run's sessions to end")
    assert not server_processes(cache), "the url backend started a server"
    out = assert_clean_run(proj, expect_built=when == "template build")
    remaining = _per_process(precious, killed)
    assert not remaining, f"the next run did not reap {remaining}:\n{out}"
    assert not [n for n in precious.dbtest_databases() if n.endswith("_build")]
    precious.assert_intact()


# -- kill -9 of dbtest seed --------------------------------------------------------------------
SEED_COMMAND = (sys.executable, "-m", "dbtest", "seed")

SLOW_SEED = '''\
"""A seed set that writes rows, then stalls (the drill kills it there)."""
import os
import time
from pathlib import Path

from sqlalchemy import text


def seed(ctx):
    ctx.connection.execute(text("INSERT INTO target_items (name) "
                                "SELECT 'seeded-' || g FROM generate_series(1, 500) g"))
    signal_file = os.environ.get("DRILL_SEED_SIGNAL")
    if signal_file:
        Path(signal_file).write_text(str(os.getpid()))
        time.sleep(60)
'''


def test_kill9_of_dbtest_seed(project: Callable[..., Project], outside: Outside) -> None:
    """All or nothing: a seed killed half-way wrote nothing, its session ends at once, and
    the same command then succeeds. It starts no server of its own."""
    probe = subprocess.run([*SEED_COMMAND, "--help"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("`dbtest seed` is not a CLI command yet (`dbtest seed --help` exits "
                    f"{probe.returncode}: {probe.stderr.strip().splitlines()[-1]}); this drill "
                    "runs once the CLI wires dbtest.seeding._command.seed_command")
    server, precious = outside
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS seedtarget")
        conn.execute("CREATE DATABASE seedtarget")
    with psycopg.connect(server.dsn_for("seedtarget"), autocommit=True) as conn:
        conn.execute("CREATE TABLE target_items (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO target_items (name) SELECT 'mine-' || g "
                     "FROM generate_series(1, 10) g")
    proj = project()
    proj.write("seeds/slow.py", SLOW_SEED)
    target = server.url_for("seedtarget")
    reached = proj.signal_file("seeding")
    run = proj.start_command(SEED_COMMAND, "slow", "--url", target,
                             DRILL_SEED_SIGNAL=str(reached))
    wait_for(reached.exists, 30, "the seed to stall half-way", run)

    run.kill9()

    def sessions() -> int:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                               "WHERE datname = 'seedtarget'").fetchone()
        return int(row[0]) if row else 0

    wait_for(lambda: sessions() == 0, GRACE_S, "the killed seed's session to end")

    def names() -> list[str]:
        with psycopg.connect(server.dsn_for("seedtarget")) as conn:
            return [r[0] for r in conn.execute("SELECT name FROM target_items ORDER BY id")]

    assert names() == [f"mine-{i}" for i in range(1, 11)], "a killed seed left rows behind"
    again = proj.start_command(SEED_COMMAND, "slow", "--url", target)
    assert again.wait(60) == 0, again.output()
    assert len(names()) == 510
    assert not registrations(proj.cache)
    precious.assert_intact()


# -- the server killed under a running test ----------------------------------------------------
def _cluster_state(cache: Path) -> str:
    """``pg_controldata``'s "Database cluster state" of the cache's current generation."""
    binaries = find_binaries()
    generation = LocalCluster(binaries, cache).current_generation()
    assert generation is not None
    out = subprocess.run([str(binaries.tool("pg_controldata")), str(generation)],
                         capture_output=True, text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Database cluster state"))


@pytest.mark.parametrize("workers", ["0", "2"])
def test_server_killed_under_a_running_test(project: Callable[..., Project], cache: Path,
                                            workers: str) -> None:
    """The test fails with the server's own words, the run ends (no hang, no internal
    error), nothing of the server is left, the crashed cluster is not kept as the cache's
    new generation (every later start would run crash recovery), and the next run starts
    cleanly. With ``-n 2`` the server is the one both workers share."""
    proj = project(backend="local")
    reached = proj.signal_file("reached")
    run = proj.start("-q", "-n", workers, DRILL_TEST_SIGNAL=str(reached))
    wait_for(reached.exists, 30, "the run to reach the test", run)
    (reg,) = registrations(cache, run.proc.pid)
    procs = processes_of(reg["postmaster_pid"], reg["run_dir"])

    os.kill(reg["postmaster_pid"], signal.SIGKILL)
    started = time.monotonic()
    rc = run.wait(30)
    ended_after = time.monotonic() - started
    out = run.output()

    assert rc == 1, out
    assert "INTERNALERROR" not in out, out
    assert "FAILED test_drill.py::test_insert_and_count" in out, out
    assert ("unexpected postmaster exit" in out or "server closed the connection" in out
            or "Connection refused" in out), out
    assert ended_after < scaled(20), (f"the run took {ended_after:.1f} s to end after the "
                                      f"server died ({limit_note(20)})")
    assert_none_left(procs, "processes of the killed server")
    _assert_run_dirs_gone([reg["run_dir"]])
    assert_registry_empty(cache)
    assert _cluster_state(cache) == "shut down"
    assert_clean_run(proj, "-n", workers)
