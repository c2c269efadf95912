"""The short start path (issue 16): what each shortcut skips, and that the server it
starts is the same: run as the server account, watched, its version right."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbtest.provision import _fastpath as fastpath
from dbtest.provision import _lifetime as lifetime
from dbtest.provision._binaries import find_binaries
from dbtest.provision._local import LocalCluster
from dbtest.provision._runas import Account, server_account

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or not server_account().switched,
    reason="the server runs as the current user here: there is no account to switch to")


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str]]:
    cache = tmp_path_factory.mktemp("fastpath-cache")
    LocalCluster(find_binaries(), cache).ensure_cached()  # the next start is a warm one
    cluster = LocalCluster(find_binaries(), cache)
    server = cluster.start()
    yield cluster, server.dsn
    cluster.stop()


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_a_warm_start_is_watched_and_reports_the_servers_own_version(
        started: tuple[LocalCluster, str]) -> None:
    cluster, dsn = started
    assert cluster._watchdog is not None and cluster._watchdog.poll() is None
    with psycopg.connect(dsn) as conn:
        row = conn.execute("show server_version").fetchone()
        assert row is not None
        assert str(row[0]).split()[0] == cluster.binaries.version
        assert conn.info.server_version == int(cluster.binaries.version.split(".")[0]) * \
            10000 + int(cluster.binaries.version.split(".")[1])


@ROOT_ONLY
def test_the_postmaster_runs_as_the_server_account_under_its_own_pid(
        started: tuple[LocalCluster, str]) -> None:
    cluster, _ = started
    assert cluster._proc is not None and cluster.run_dir is not None
    pid = cluster._proc.pid
    assert _uid_of(pid) == cluster.account.uid
    assert lifetime.is_our_postmaster(pid, str(cluster.run_dir))
    pidfile = cluster.run_dir / "data" / "postmaster.pid"
    assert int(pidfile.read_text().split("\n", 1)[0]) == pid  # setpriv exec'd into it


def test_known_version_needs_the_pidfile_to_name_the_server(tmp_path: Path) -> None:
    pidfile = tmp_path / "postmaster.pid"
    pidfile.write_text("4242\n/data\n1\n5432\n\n\n\nready\n")
    assert fastpath.known_version("15.18", pidfile, 4242) == ("15.18", 150018)
    assert fastpath.known_version("15.18", pidfile, 4243) is None  # a stale pidfile
    assert fastpath.known_version("16beta1", pidfile, 4242) is None  # ask the server


@ROOT_ONLY
def test_a_tree_the_account_owns_is_not_walked_another_one_is(tmp_path: Path) -> None:
    account: Account = server_account()
    mine = (account.uid, account.gid)
    data = tmp_path / "run" / "data"
    (data / "global").mkdir(parents=True)
    for name in ("PG_VERSION", "global/pg_control", "global/1262"):
        (data / name).write_text("x")
    (tmp_path / "run" / "socket").mkdir()
    for path in (data, data / "global", data / "PG_VERSION", data / "global" / "pg_control"):
        os.chown(path, *mine)
    fastpath.give_run_dir(tmp_path / "run", data, tmp_path / "run" / "socket", account)
    assert (tmp_path / "run").stat().st_uid == account.uid
    assert (tmp_path / "run" / "socket").stat().st_uid == account.uid
    assert (data / "global" / "1262").stat().st_uid == 0  # not walked: its top was theirs

    os.chown(data, 0, 0)  # a cache made under another uid: walked
    fastpath.give_run_dir(tmp_path / "run", data, tmp_path / "run" / "socket", account)
    assert (data / "global" / "1262").stat().st_uid == account.uid


def test_as_account_goes_through_setpriv_when_there_is_one() -> None:
    account = server_account()
    cmd, options = fastpath.as_account(["postgres", "-D", "x"], account)
    if not account.switched:
        assert (cmd, options) == (["postgres", "-D", "x"], {})
    elif shutil.which("setpriv"):
        assert cmd[0].endswith("setpriv") and cmd[-3:] == ["postgres", "-D", "x"]
        assert f"--reuid={account.uid}" in cmd and options == {}
    else:
        assert options["user"] == account.uid
