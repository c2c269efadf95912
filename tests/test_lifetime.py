"""A server never outlives its owner; what a dead owner left is reaped; startup hygiene.

Real servers throughout, started in child processes that are then killed for real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbtest.errors import ProvisionError
from dbtest.provision import _lifetime as lifetime
from dbtest.provision import _local as local
from dbtest.provision._binaries import find_binaries
from dbtest.provision._local import LocalCluster


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own cache dir: its registry sees only this module's servers."""
    return tmp_path_factory.mktemp("cache")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[[str, Path], tuple[subprocess.Popen[str],
                                                                   dict[str, Any]]]]:
    """Run a Python snippet in a child process; it prints one JSON line, then sleeps."""
    started: list[subprocess.Popen[str]] = []

    def run(code: str, cache_dir: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(cache_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=tmp_path)  # no pyproject.toml: default settings
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"child failed: {proc.communicate()[1]}")
        return proc, json.loads(line)

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


START_CLUSTER = """
    import json, sys, time
    from pathlib import Path
    from dbtest.provision._binaries import find_binaries
    from dbtest.provision._local import LocalCluster

    cluster = LocalCluster(find_binaries(), Path(sys.argv[1]))
    server = cluster.start(detached=DETACHED)
    print(json.dumps({"pid": server.details["pid"], "run_dir": str(cluster.run_dir),
                      "entry": str(cluster.entry),
                      "watchdog": cluster._watchdog.pid if cluster._watchdog else None}),
          flush=True)
    if not DETACHED:
        time.sleep(60)
"""


def test_killed_owner_takes_its_server_along(child: Any, cache: Path) -> None:
    proc, info = child("""
        import json, sys, time
        import dbtest

        with dbtest.ephemeral_postgres(backend="local", cache_dir=sys.argv[1]) as server:
            print(json.dumps(server.details), flush=True)
            time.sleep(60)
    """, cache)
    pid, run_dir = info["pid"], Path(info["data_dir"]).parent
    assert lifetime.is_our_postmaster(pid, str(run_dir))

    os.kill(proc.pid, signal.SIGKILL)

    assert wait_until(lambda: not lifetime.pid_alive(pid)), "postmaster outlived its owner"
    assert wait_until(lambda: not run_dir.exists()), f"{run_dir} was left behind"
    assert not list((cache / "run").glob(f"{pid}-*.json"))


KILLED_MID_START = """
    import json, os, sys, time
    from pathlib import Path
    from dbtest.provision import _lifetime as lifetime
    from dbtest.provision._binaries import find_binaries
    from dbtest.provision._local import LocalCluster

    def die(watchdog, pid, entry):
        # the moment after the postmaster was spawned, before its pid reached anyone
        for _ in range(500):  # until the child has exec'd postgres
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")
            if b"-D" in args:
                break
            time.sleep(0.01)
        data = args[args.index(b"-D") + 1].decode()
        print(json.dumps({"pid": pid, "run_dir": str(Path(data).parent), "entry": str(entry),
                          "watchdog": watchdog.pid}), flush=True)
        os._exit(9)

    lifetime.watch_server = die
    LocalCluster(find_binaries(), Path(sys.argv[1])).start()
"""


def test_owner_killed_right_after_spawning_the_server_leaves_nothing(child: Any,
                                                                     cache: Path) -> None:
    # the watchdog runs before the server: told nothing, it finds the run folder's server
    proc, info = child(KILLED_MID_START, cache)
    proc.wait()
    pid = info["pid"]
    assert lifetime.pid_alive(info["watchdog"]) or not lifetime.pid_alive(pid)
    assert wait_until(lambda: not lifetime.pid_alive(pid), 10), "postmaster outlived its owner"
    assert wait_until(lambda: not Path(info["run_dir"]).exists()), "run folder left behind"
    assert wait_until(lambda: not Path(info["entry"]).exists()), "registry entry left behind"


def test_a_start_for_an_owner_already_gone_starts_nothing(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    cluster = LocalCluster(find_binaries(), tmp_path / "cache")
    with pytest.raises(ProvisionError, match=f"pid {gone.pid}.* is gone"):
        cluster.start(owner_pid=gone.pid)
    assert not list((tmp_path / "cache" / "run").glob("*.json"))


def test_next_start_reaps_a_server_whose_owner_and_watchdog_died(child: Any,
                                                                 cache: Path) -> None:
    proc, info = child(START_CLUSTER.replace("DETACHED", "False"), cache)
    pid, run_dir, entry = info["pid"], Path(info["run_dir"]), Path(info["entry"])
    os.kill(info["watchdog"], signal.SIGKILL)  # nothing watches any more...
    os.kill(proc.pid, signal.SIGKILL)          # ...and the owner is gone
    proc.wait()
    time.sleep(0.2)
    assert lifetime.is_our_postmaster(pid, str(run_dir)), "the server should still run"
    assert entry.exists()

    cluster = LocalCluster(find_binaries(), cache)
    cluster.start()
    try:
        assert not lifetime.pid_alive(pid)
        assert not run_dir.exists()
        assert not entry.exists()
    finally:
        cluster.stop()


def test_clean_stops_an_unregistered_server_whose_owner_and_watchdog_died(
        child: Any, cache: Path, tmp_path: Path) -> None:
    # the worst case: owner and watchdog killed, the registry entry lost; the folder's
    # mark still names the dead owner, so the server is provably nobody's
    from dbtest import commands
    from dbtest.settings import resolve

    proc, info = child(START_CLUSTER.replace("DETACHED", "False"), cache)
    pid, run_dir, entry = info["pid"], Path(info["run_dir"]), Path(info["entry"])
    os.kill(info["watchdog"], signal.SIGKILL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    entry.unlink()
    assert not lifetime.in_use(run_dir)
    assert lifetime.is_our_postmaster(pid, str(run_dir)), "the server should still run"

    settings = resolve({"cache_dir": cache, "backend": "auto"}, environ={}, pyproject=None,
                       root=tmp_path)
    report = commands.clean(settings, databases=False)

    assert any(item.path == run_dir and item.removed for item in report.items), report
    assert not lifetime.pid_alive(pid) and not run_dir.exists()


def test_detached_server_outlives_its_owner_until_it_stops(child: Any, cache: Path) -> None:
    proc, info = child(START_CLUSTER.replace("DETACHED", "True"), cache)
    pid, run_dir, entry = info["pid"], Path(info["run_dir"]), Path(info["entry"])
    assert info["watchdog"] is None
    assert entry.name == f"{pid}-{pid}.json"  # the postmaster is its own owner
    assert proc.wait(timeout=10) == 0

    time.sleep(0.3)  # a watchdog would have stopped it by now
    assert lifetime.is_our_postmaster(pid, str(run_dir))
    assert lifetime.reap(cache / "run") == []
    assert lifetime.in_use(run_dir)

    os.kill(pid, signal.SIGKILL)  # the server dies: now the reaper takes its folder
    assert wait_until(lambda: not lifetime.pid_alive(pid))
    assert lifetime.reap(cache / "run") == [str(run_dir)]
    assert not run_dir.exists()
    assert not entry.exists()


def test_remove_run_dir_refuses_a_folder_without_the_mark(tmp_path: Path) -> None:
    foreign = tmp_path / "dbtest-abcdefgh"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")

    assert lifetime.remove_run_dir(str(foreign)) is False
    assert lifetime.remove_run_dir(str(foreign), background=True) is False
    assert (foreign / "precious.txt").read_text() == "keep me"

    lifetime.mark_owned(foreign, os.getpid())
    assert lifetime.remove_run_dir(str(foreign)) is True
    assert not foreign.exists()


def test_in_use_follows_the_owner_named_in_the_mark(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    lifetime.mark_owned(folder, os.getpid())
    assert lifetime.in_use(folder)

    dead = subprocess.Popen(["true"])
    dead.wait()
    lifetime.mark_owned(folder, dead.pid)
    assert not lifetime.in_use(folder)


def test_unreadable_registry_entries_are_listed_then_reaped(tmp_path: Path) -> None:
    registry = tmp_path / "run"
    registry.mkdir()
    junk = registry / "1-2.json"
    junk.write_text("{not json")

    assert lifetime.orphans(registry) == [(junk, None)]
    assert junk.exists()  # listing changes nothing
    lifetime.reap(registry)
    assert not junk.exists()


# -- startup hygiene --------------------------------------------------------------------
def test_requested_port_in_use_fails_before_spawning(cache: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = LocalCluster(find_binaries(), cache, port=port)

        with pytest.raises(ProvisionError, match=f"port {port} .*in use") as info:
            cluster.start()

    assert "port=0" in str(info.value)  # the fix
    assert cluster.run_dir is None  # nothing copied, nothing spawned


def test_unwritable_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cluster = LocalCluster(find_binaries(), blocker / "cache")

    with pytest.raises(ProvisionError, match=r"cannot create .*a-file/cache.*DBTEST_CACHE_DIR"):
        cluster.start()


def test_initdb_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    cluster = LocalCluster(find_binaries(), tmp_path / "cache")  # no cached cluster yet
    cluster.cluster_dir.mkdir(parents=True)
    lock = cluster.cluster_dir / "initdb.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "lock = FileLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); "
         "time.sleep(60)", str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        # while its holder lives, the lock is real...
        with pytest.raises(ProvisionError, match=r"initdb\.lock"):
            cluster.ensure_cached(lock_timeout=0.2)
        holder.kill()  # SIGKILL: no chance to release it
        holder.wait()
        assert lock.exists()  # the crashed run's lock file stays behind...

        started = time.monotonic()
        generation, fresh = cluster.ensure_cached(lock_timeout=5)  # ...and blocks nobody
    finally:
        holder.kill()
        holder.wait()
    assert fresh and (generation / "PG_VERSION").is_file()
    # 5 s on a quiet machine (initdb + a copy into the cache), scaled by the load per CPU
    load = os.getloadavg()[0]
    limit = 5 * max(1.0, load / (os.cpu_count() or 1))
    took = time.monotonic() - started
    assert took < limit, f"{took:.1f} s: the stale lock held it up (limit {limit:.0f} s at load " \
                         f"{load:.1f})"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another account")
def test_run_folder_goes_where_the_server_account_can_reach(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No room in /dev/shm (Docker gives 64 MiB) sends runs to <cache>/tmp, which the server
    # account cannot enter when the cache lives under root's 0700 home (or pytest's).
    monkeypatch.setattr(local, "TMPFS", Path("/nonexistent"))
    cluster = LocalCluster(find_binaries(), cache)
    server = cluster.start()
    try:
        assert cluster.run_dir is not None
        # in this cache dir's own folder there
        assert cluster.run_dir.parent.parent == Path(tempfile.gettempdir())
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        cluster.stop()


WAITING_TEST = '''
import os, pathlib, signal, time

def test_needs_the_server_after_the_controller_died(request):
    # execnet SIGINTs a worker 5 s after its controller is gone: ignored, so that a slow
    # machine still reaches the start (it exits the worker 10 s later regardless)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    flag = pathlib.Path(os.environ["FLAG"])
    flag.with_suffix(".ready").write_text(str(os.getpid()))
    while not flag.exists():
        time.sleep(0.02)
    flag.with_suffix(".asked").touch()
    try:
        request.getfixturevalue("db")
    except BaseException as exc:
        flag.with_suffix(".outcome").write_text(f"{type(exc).__name__}: {exc}")
        raise
    flag.with_suffix(".outcome").write_text("started")
'''


def test_an_xdist_worker_outliving_its_killed_controller_starts_no_server(
        tmp_path: Path) -> None:
    # Once the controller is gone the worker's parent is init: the owner the worker names
    # must come from the controller itself, or the server would be watched on pid 1.
    pytest.importorskip("xdist")
    project, cache, flag = tmp_path / "project", tmp_path / "cache", tmp_path / "flag"
    (project / "schema").mkdir(parents=True)
    (project / "schema" / "001.sql").write_text("CREATE TABLE t (id int);\n")
    (project / "pyproject.toml").write_text(
        '[tool.dbtest]\nschema = "sql:schema/*.sql"\nprestart = "off"\n')
    (project / "test_wait.py").write_text(WAITING_TEST)
    env = {**os.environ, "DBTEST_CACHE_DIR": str(cache), "FLAG": str(flag)}
    env.pop("DBTEST_URL", None)
    controller = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-n", "1"], cwd=project, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_until(flag.with_suffix(".ready").exists, 60), "the worker never ran"
        worker = int(flag.with_suffix(".ready").read_text())
        os.kill(controller.pid, signal.SIGKILL)
        controller.wait()
        flag.touch()
        assert wait_until(lambda: not lifetime.pid_alive(worker), 60)
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(controller.pid, signal.SIGKILL)
    if not flag.with_suffix(".asked").exists():
        pytest.fail("the worker ended with its controller: this test needs it to live on")
    outcome = flag.with_suffix(".outcome").read_text()
    assert "is gone" in outcome, outcome
    servers = [p for p in cache.glob("run/*.json")]
    assert wait_until(lambda: not list(cache.glob("run/*.json")), 10), servers


HOLDING_TEST = '''
import os, pathlib, time
from sqlalchemy import text

def test_holds_the_server(db):
    flag = pathlib.Path(os.environ["FLAG"])
    data = db.execute(text("SELECT setting FROM pg_settings WHERE name = 'data_directory'"))
    flag.with_suffix(".ready").write_text(data.scalar())
    time.sleep(120)
'''


def test_killing_an_xdist_controller_stops_the_shared_server_its_worker_started(
        tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    project, cache, flag = tmp_path / "project", tmp_path / "cache", tmp_path / "flag"
    (project / "schema").mkdir(parents=True)
    (project / "schema" / "001.sql").write_text("CREATE TABLE t (id int);\n")
    (project / "pyproject.toml").write_text('[tool.dbtest]\nschema = "sql:schema/*.sql"\n')
    (project / "test_hold.py").write_text(HOLDING_TEST)
    env = {**os.environ, "DBTEST_CACHE_DIR": str(cache), "FLAG": str(flag)}
    env.pop("DBTEST_URL", None)
    controller = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-n", "1"], cwd=project, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_until(flag.with_suffix(".ready").exists, 60), "the worker never ran"
        run_dir = Path(flag.with_suffix(".ready").read_text()).parent
        pid = int((run_dir / "data" / "postmaster.pid").read_text().split()[0])
        assert lifetime.is_our_postmaster(pid, str(run_dir))
        os.kill(controller.pid, signal.SIGKILL)  # the owner; its worker lives on a while
        controller.wait()
        assert wait_until(lambda: not lifetime.pid_alive(pid), 30), "server outlived its owner"
        assert wait_until(lambda: not run_dir.exists(), 10), f"{run_dir} was left behind"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(controller.pid, signal.SIGKILL)
