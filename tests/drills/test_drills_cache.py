"""Fault drills on the cache dir: deleted while a run is in progress, ``kill -9`` during the
first ``initdb``, and lock files left by dead processes.

Each drill checks that no server process of the broken run is left after 5 s and that the
next run starts cleanly (and in seconds: a stale lock must not make it wait).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _kit import (
    Project,
    assert_clean_run,
    assert_none_left,
    assert_registry_empty,
    limit_note,
    postgres_naming,
    registrations,
    scaled,
    server_processes,
    wait_for,
    wait_gone,
)

from dbtest.provision._binaries import find_binaries
from dbtest.provision._lifetime import OWNED_MARK
from dbtest.provision._local import LocalCluster, run_bases


@pytest.mark.parametrize("workers", ["0", "2"])
def test_cache_deleted_mid_run(project: Callable[..., Project], tmp_path: Path,
                               workers: str) -> None:
    """Another process deletes the whole cache dir while a test runs: the run still ends
    (here it passes), its server goes with it, and the next run starts from scratch (a new
    initdb) and passes. With ``-n 2`` the server belongs to the xdist controller, whose
    record of it went with the cache."""
    cache = tmp_path / "cache"  # its own: this drill deletes it
    proj = project(cache=cache, backend="local")
    signal, go = proj.signal_file("reached"), proj.signal_file("go")
    run = proj.start("-q", "-n", workers, DRILL_TEST_SIGNAL=str(signal), DRILL_TEST_GO=str(go))
    wait_for(signal.exists, 40, "the run to reach the test", run)
    procs = server_processes(cache, run.proc.pid)
    run_dirs = [reg["run_dir"] for reg in registrations(cache, run.proc.pid)]
    assert len(run_dirs) == 1, run_dirs

    # the first run copies its new cluster into the cache in the background: delete a
    # complete cache (the same every time), the way a user would
    wait_for(lambda: bool(list(cache.glob("clusters/*/current"))), 30, "the cache", run)
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    assert not cache.exists()
    go.touch()
    rc = run.wait(30)

    out = run.output()
    assert rc == 0, f"the run should finish its tests (rc {rc}):\n{out}"
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    assert_none_left(procs, "server of a run whose cache was deleted")
    # the run's copy into the (re-created) cache runs on in the background for a moment
    # after pytest exits; it must end on its own
    assert not wait_gone(postgres_naming(run_dirs[0]))
    assert_clean_run(proj, "-n", workers, expect_built=True)
    assert_registry_empty(cache)


def _work_dirs(cache: Path, owner: int) -> list[Path]:
    """initdb work folders (in every place dbtest puts run folders) marked by ``owner``."""
    found = []
    for base in run_bases(cache):
        # this cache dir's own folder in each run base (older dbtest: the base itself)
        for folder in [*base.glob("dbtest-u*/dbtest-initdb-*"), *base.glob("dbtest-initdb-*")]:
            try:
                if (folder / OWNED_MARK).read_text().strip() == str(owner):
                    found.append(folder)
            except OSError:
                continue
    return found


def test_kill9_during_first_initdb(project: Callable[..., Project], tmp_path: Path) -> None:
    """A run killed while it initdbs an empty cache leaves ``initdb.lock`` and a half-made
    cluster: the next run is not blocked by the lock, initdbs again, passes, and removes
    the dead run's work folder."""
    cache = tmp_path / "cache"
    proj = project(cache=cache, backend="local")
    run = proj.start("-q")
    wait_for(lambda: bool(_work_dirs(cache, run.proc.pid)), 30, "initdb to start", run)
    (work,) = _work_dirs(cache, run.proc.pid)

    run.kill9()

    # initdb itself (a child of the killed run) finishes or dies on its own
    assert_none_left([p for p in postgres_naming(str(work))], "initdb of a killed run")
    assert list(cache.glob("clusters/*/initdb.lock")), "the drill left no stale initdb.lock"
    started = time.monotonic()
    assert_clean_run(proj, expect_built=True)
    assert time.monotonic() - started < scaled(30), \
        f"the next run waited on the stale lock ({limit_note(30)})"
    assert not work.exists(), f"the next run left the dead run's initdb folder {work}"
    assert_registry_empty(cache)


HOLD = ("import sys, time\nfrom filelock import FileLock\nFileLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\ntime.sleep(60)\n")


def _left_by_a_dead_holder(lock: Path) -> int:
    """Take ``lock`` the way dbtest does (filelock), then ``kill -9`` the holder: the file
    stays behind. Returns the dead holder's pid."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert lock.exists()
    return proc.pid


def test_stale_lock_files_block_nothing(project: Callable[..., Project],
                                        tmp_path: Path) -> None:
    """``initdb.lock``, ``shared/<run>.lock`` (with that run's record naming a dead
    server) and ``up.lock`` left by killed processes: a first run with ``-n 2`` under that
    same xdist run id (initdb, then the shared server) and ``dbtest up --detach`` /
    ``dbtest down`` all go through at once."""
    cache = tmp_path / "cache"
    cluster_dir = LocalCluster(find_binaries(), cache).cluster_dir
    _left_by_a_dead_holder(cluster_dir / "initdb.lock")
    run_id = "0123456789abcdef0123456789abcdef"
    dead = _left_by_a_dead_holder(cache / "shared" / f"{run_id}.lock")
    (cache / "shared" / f"{run_id}.json").write_text(
        f'{{"pid": {dead}, "run_dir": "/nonexistent/dbtest-deadbeef"}}')
    _left_by_a_dead_holder(cache / "up.lock")
    proj = project(cache=cache, backend="local")

    started = time.monotonic()
    assert_clean_run(proj, "-n", "2", f"--testrunuid={run_id}", expect_built=True)
    assert not list((cache / "shared").glob(f"{run_id}.*")), "the run's records stayed"
    dbtest = (sys.executable, "-m", "dbtest")
    up = proj.start_command(dbtest, "up", "--detach")
    assert up.wait(30) == 0, up.output()
    procs = server_processes(cache)
    assert procs, f"dbtest up --detach registered no server:\n{up.output()}"
    down = proj.start_command(dbtest, "down")
    assert down.wait(30) == 0, down.output()
    elapsed = time.monotonic() - started

    assert elapsed < scaled(40), f"stale locks held things up: {elapsed:.0f} s ({limit_note(40)})"
    assert_none_left(procs, "server of dbtest up --detach after dbtest down")
    assert_registry_empty(cache)
