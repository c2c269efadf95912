"""Liveness from the server: a run's databases are dropped by other runs' janitors exactly
when its advisory lock (its admin connection) is gone, whatever host name and pid its
marks carry. Real connections, real processes, one server of this module's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbtest._databases import admin_connection, create_database, database_mark
from dbtest._janitor import drop_stale, stale_databases
from dbtest._liveness import (
    CONNECTIONS_PER_WORKER,
    RunLease,
    check_budget,
    held_run_keys,
    key_held,
    read_budget,
)
from dbtest._templates import build_lock_key
from dbtest._workspace import Workspace
from dbtest.errors import DbtestError, ProvisionError
from dbtest.provision._server import PostgresServer
from dbtest.settings import Settings, resolve

pytest_plugins = ["pytester"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def exists(admin: psycopg.Connection, name: str) -> bool:
    try:
        database_mark(admin, name)
    except DbtestError:
        return False
    return True


def janitor_finds(dsn: str) -> set[str]:
    """What another run's janitor (its own connection) would drop."""
    with admin_connection(dsn) as admin:
        return {s.name for s in stale_databases(admin, templates=False)}


def wait_gone(admin: psycopg.Connection, application_name: str) -> None:
    """Until the server has ended the session of a killed client (it releases its locks)."""
    deadline = time.monotonic() + 10
    while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                        (application_name,)).fetchone() != (0,):
        assert time.monotonic() < deadline, f"{application_name} still connected"
        time.sleep(0.02)


@pytest.mark.parametrize("key", [0, 1, -1, 2**32, -(2**32) - 1, 2**63 - 1, -(2**63)])
def test_held_locks_are_read_back_from_pg_locks_for_any_key(own_server: PostgresServer,
                                                            key: int) -> None:
    with admin_connection(own_server.dsn) as holder, admin_connection(own_server.dsn) as other:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        held = held_run_keys(other)
        assert key_held(held, key)
        assert not key_held(held, key ^ 1) and not key_held(held, key ^ (1 << 40))
        holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
        assert not key_held(held_run_keys(other), key)


def test_live_run_survives_same_host_and_dead_pid_mark(own_server: PostgresServer) -> None:
    lease = RunLease(own_server.dsn)
    forged = {"pid": dead_pid()}  # this host's name and a pid not alive here: in a pid
    # namespace of its own, a live shard looks exactly like this to the old rule
    with admin_connection(own_server.dsn) as admin:
        create_database(admin, "live_tok_w", purpose="worker", mark={**lease.mark, **forged})
        create_database(admin, "live_tok_f", purpose="fresh", mark={**lease.mark, **forged})
        create_database(admin, "live_old_w", purpose="worker", mark=forged)  # no token
        # the janitor's own host name and pid (pytest is pid 1 in every shard's namespace)
        create_database(admin, "live_tok_same", purpose="worker", mark=lease.mark)
        create_database(admin, "live_old_same", purpose="worker")
        found = janitor_finds(own_server.dsn)
        assert "live_old_w" in found  # the old rule drops it: the control
        assert not found & {"live_tok_w", "live_tok_f", "live_tok_same", "live_old_same"}
        drop_stale(admin, [s for s in stale_databases(admin, templates=False)
                           if s.name == "live_old_w"])
        lease.close()  # the run ends without dropping its databases (as if killed)
        found = janitor_finds(own_server.dsn)
        assert {"live_tok_w", "live_tok_f", "live_tok_same"} <= found
        assert "live_old_same" not in found  # the old rule would keep it forever
        with admin_connection(own_server.dsn) as janitor:
            assert drop_stale(janitor, [s for s in stale_databases(janitor, templates=False)
                                        if s.name.startswith("live_tok_")]) == []
        assert not any(exists(admin, f"live_tok_{k}") for k in ("w", "f", "same"))
        admin.execute('DROP DATABASE "live_old_same"')


def test_foreign_host_mark_with_live_lock_is_kept_then_dropped_at_once(
        own_server: PostgresServer) -> None:
    lease = RunLease(own_server.dsn)
    mark = {**lease.mark, "owner": "ci@runner-7", "created": time.time() - 3 * 86400}
    with admin_connection(own_server.dsn) as admin:
        create_database(admin, "live_far_w", purpose="worker", mark=mark)
        # three days old and from another host: the old rule would drop it
        assert "live_far_w" not in janitor_finds(own_server.dsn)
        # its run dies (the server ends its session, as when a runner is lost)
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = %s", (f"dbtest run {lease.token}",))
        wait_gone(admin, f"dbtest run {lease.token}")
        assert "live_far_w" in janitor_finds(own_server.dsn)
        drop_stale(admin, stale_databases(admin, templates=False))
        assert not exists(admin, "live_far_w")
    lease.close()


def test_half_built_template_is_left_while_its_build_lock_is_held(
        own_server: PostgresServer) -> None:
    name = "dbtest_tpl_livenesstest0001"
    key = build_lock_key(name)
    with admin_connection(own_server.dsn) as builder, \
            admin_connection(own_server.dsn) as admin:
        create_database(admin, name + "_build", purpose="template",
                        mark={"state": "building", "pid": os.getpid()})
        builder.execute("SELECT pg_advisory_lock(%s)", (key,))
        stale = [s for s in stale_databases(admin) if s.name == name + "_build"]
        assert stale == []
        builder.execute("SELECT pg_advisory_unlock(%s)", (key,))
        stale = [s for s in stale_databases(admin) if s.name == name + "_build"]
        assert len(stale) == 1 and stale[0].lock == key
        # a build that starts between the janitor's look and its drop wins
        builder.execute("SELECT pg_advisory_lock(%s)", (key,))
        assert drop_stale(admin, stale) == []
        assert exists(admin, name + "_build")
        builder.execute("SELECT pg_advisory_unlock(%s)", (key,))
        assert drop_stale(admin, stale) == []
        assert not exists(admin, name + "_build")
        # the janitor released the build lock it took for the drop
        assert builder.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)


@pytest.fixture
def url_settings(own_server: PostgresServer, tmp_path: Path) -> Settings:
    return resolve({"url": own_server.url, "cache_dir": tmp_path / "cache"}, read_env=False,
                   pyproject=None, root=tmp_path)


CHILD = """
import sys, time
from pathlib import Path
from dbtest.settings import resolve
from dbtest._workspace import Workspace

settings = resolve({{"url": {url!r}, "cache_dir": {cache!r}}}, read_env=False, pyproject=None,
                   root=Path({root!r}))
ws = Workspace(settings)
print(ws.worker_database(ws.default_key()).name, ws.run_token, flush=True)
time.sleep(120)
"""


@pytest.fixture
def killed_run(url_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    code = CHILD.format(url=url_settings.url, cache=str(url_settings.cache_dir),
                        root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, text=True)
    yield proc
    proc.kill()
    proc.wait()


def test_runs_through_workspaces_on_a_url_server(url_settings: Settings,
                                                  killed_run: subprocess.Popen[str],
                                                  own_server: PostgresServer) -> None:
    assert killed_run.stdout is not None
    other_db, other_token = killed_run.stdout.readline().split()
    live = Workspace(url_settings)
    try:
        mine = live.worker_database(live.default_key()).name  # its start ran the janitor
        fresh = live.fresh_database(live.default_key())
        with admin_connection(own_server.dsn) as admin:
            assert exists(admin, other_db)  # the other run is alive: kept
            for name in (mine, fresh.name):
                assert (database_mark(admin, name) or {}).get("run") == live.run_token
            os.kill(killed_run.pid, signal.SIGKILL)
            killed_run.wait()
            wait_gone(admin, f"dbtest run {other_token}")
            assert exists(admin, other_db)  # nothing runs the janitor by itself
            later = Workspace(url_settings)
            try:
                later.server  # noqa: B018 - its start runs the janitor
                assert not exists(admin, other_db)  # the dead run's database: dropped
                assert exists(admin, mine) and exists(admin, fresh.name)  # the live one's
            finally:
                later.close()
        live.release_fresh(live.default_key(), fresh)
    finally:
        live.close()
    with admin_connection(own_server.dsn) as admin:
        assert not exists(admin, mine)


def test_budget_refuses_more_workers_than_max_connections(own_server: PostgresServer,
                                                          url_settings: Settings) -> None:
    with admin_connection(own_server.dsn) as admin:
        budget = read_budget(admin)
        fits = (budget.available - 2) // CONNECTIONS_PER_WORKER
        assert check_budget(admin, fits, own_server.dsn) == budget
        with pytest.raises(ProvisionError, match=rf"max_connections = {budget.max_connections}"
                           rf".*{fits + 1} worker\(s\).*pytest -n {fits}\)"):
            check_budget(admin, fits + 1, own_server.dsn)
    ws = Workspace(url_settings, workers=fits + 1)
    enough = budget.max_connections + (fits + 1) * CONNECTIONS_PER_WORKER + 2 - budget.available
    with pytest.raises(ProvisionError, match=rf"SET max_connections = {enough}; then restart"):
        ws.server  # noqa: B018
    assert not ws.started and ws.run_token is None  # nothing held after the refusal


def test_role_connection_limit_is_part_of_the_budget(own_server: PostgresServer) -> None:
    with admin_connection(own_server.dsn) as admin:
        admin.execute("CREATE ROLE liveness_small LOGIN CREATEDB CONNECTION LIMIT 3")
        try:
            dsn = own_server.dsn + " user=liveness_small"
            with admin_connection(dsn) as small:
                with pytest.raises(ProvisionError, match=r"role limit 3.*Fix: raise the role's "
                                                         r"limit \(ALTER ROLE liveness_small "
                                                         r"CONNECTION LIMIT 6\)"):
                    check_budget(small, 1, dsn)  # 6 needed, 3 allowed
                others = [psycopg.connect(dsn) for _ in range(2)]
                try:  # the limit is reached: the next connection fails with the fix
                    with pytest.raises(ProvisionError, match=r"no connection left.*CONNECTION "
                                                             "LIMIT"):
                        admin_connection(dsn).__enter__()
                finally:
                    for conn in others:
                        conn.close()
        finally:
            admin.execute("DROP ROLE liveness_small")


def test_xdist_run_too_big_for_the_server_fails_before_its_workers_start(
        own_server: PostgresServer, pytester: pytest.Pytester,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_one="def test_one(db):\n    pass\n")
    with admin_connection(own_server.dsn) as admin:
        admin.execute("CREATE ROLE liveness_xdist LOGIN CREATEDB CONNECTION LIMIT 6")
        try:
            monkeypatch.setenv("DBTEST_URL", own_server.params.url().replace(
                "//postgres", "//liveness_xdist", 1))
            result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
            assert result.ret == pytest.ExitCode.USAGE_ERROR
            result.stderr.fnmatch_lines(["ERROR: dbtest: the server at * allows this role 6 "
                                         "connections (*role limit 6); a run with 2 worker(s) "
                                         "needs about 10 *pytest -n 1*CONNECTION LIMIT 10)."])
            result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1")
            result.assert_outcomes(passed=1)  # one worker fits
        finally:
            admin.execute("REASSIGN OWNED BY liveness_xdist TO postgres")  # its template
            admin.execute("DROP ROLE liveness_xdist")


def test_dropping_a_database_another_session_is_dropping_keeps_the_connection(
        own_server: PostgresServer) -> None:
    """Two janitors once raced on one database: ALTER on a database marked invalid by a
    DROP in progress is FATAL, and it ended the session that held the run's lock."""
    with admin_connection(own_server.dsn) as admin:
        create_database(admin, "live_invalid", purpose="worker", mark={"run": "00" * 8})
        # what an interrupted DROP DATABASE leaves (PostgreSQL 15.4+): datconnlimit -2
        admin.execute("UPDATE pg_database SET datconnlimit = -2 WHERE datname = 'live_invalid'")
        with admin_connection(own_server.dsn) as janitor:
            assert drop_stale(janitor, [s for s in stale_databases(janitor, templates=False)
                                        if s.name == "live_invalid"]) == []
            assert janitor.execute("SELECT 1").fetchone() == (1,)  # its session lives on
        assert not exists(admin, "live_invalid")


def test_janitor_reaping_a_dead_run_makes_the_others_skip_it(own_server: PostgresServer) -> None:
    lease = RunLease(own_server.dsn)
    with admin_connection(own_server.dsn) as admin, \
            admin_connection(own_server.dsn) as reaper:
        create_database(admin, "live_reaped", purpose="worker", mark=lease.mark)
        lease.close()
        (item,) = [s for s in stale_databases(admin, templates=False) if s.name == "live_reaped"]
        assert item.lock is not None
        reaper.execute("SELECT pg_advisory_lock(%s)", (item.lock,))  # a janitor at work
        assert "live_reaped" not in janitor_finds(own_server.dsn)
        assert drop_stale(admin, [item]) == [] and exists(admin, "live_reaped")
        reaper.execute("SELECT pg_advisory_unlock(%s)", (item.lock,))
        assert drop_stale(admin, [item]) == [] and not exists(admin, "live_reaped")
