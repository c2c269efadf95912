"""The ``dbtest`` command line, run as users run it (``python -m dbtest.cli``) or through
``main([...])``, against real servers."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

import dbtest
from dbtest import cli, commands
from dbtest.provision import _lifetime as lifetime
from dbtest.provision import _local as local
from dbtest.provision._runas import planned_account

SECRET_URL = "postgresql://x:secret@127.0.0.1:1/db"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own cache dir (one initdb for the module)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working dir without pyproject.toml, and no DBTEST_* variables: default settings."""
    for name in list(os.environ):
        if name.startswith("DBTEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("DBTEST_")}
    return subprocess.run([sys.executable, "-m", "dbtest.cli", *args], cwd=cwd,
                          env={**clean_env, **(env or {})}, capture_output=True, text=True,
                          timeout=60, check=False)


def printed(stdout: str) -> dict[str, str]:
    """The ``# url:``/``# dsn:`` comments and the exported URL that ``up`` prints."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith(("# url: ", "# dsn: ")):
            out[line[2:5]] = line[7:]
        elif line.startswith("export DBTEST_URL="):
            out["export"] = shlex.split(line.removeprefix("export DBTEST_URL="))[0]
    return out


def test_version(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dbtest {dbtest.__version__}"
    # python -m dbtest works too
    proc = subprocess.run([sys.executable, "-m", "dbtest", "--version"], cwd=workdir,
                          capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"dbtest {dbtest.__version__}")


def test_help_lists_every_subcommand(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("up", "down", "doctor", "clean"):
        assert f"    {name} " in out


def test_doctor_reports_local_usable_with_its_account(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache_dir = workdir / "not-created"
    account = planned_account()

    assert cli.main(["--cache-dir", str(cache_dir), "doctor"]) == 0

    out = capsys.readouterr().out
    local_row = next(line for line in out.splitlines() if line.startswith("local "))
    assert local_row.split()[1] == "yes"
    assert account is not None and f"runs as {account.name}" in local_row
    if os.geteuid() == 0:
        assert "PostgreSQL refuses root" in local_row  # says why it switches account
    assert "backend: auto -> local" in out
    for backend in ("embedded", "docker", "url"):
        assert any(line.startswith(backend + " ") for line in out.splitlines())
    assert not cache_dir.exists()  # doctor creates nothing


def test_doctor_fails_when_the_chosen_backend_is_unusable(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--backend", "url", "--url", SECRET_URL, "doctor"]) == 1
    captured = capsys.readouterr()
    assert "secret" not in captured.out + captured.err
    assert "x:***@127.0.0.1:1" in captured.out
    assert "fix: " in captured.out


def test_up_detach_query_then_down(workdir: Path, cache: Path) -> None:
    started = run_cli("--cache-dir", str(cache), "up", "--detach", cwd=workdir)
    assert started.returncode == 0, started.stderr
    shown = printed(started.stdout)
    state = commands.detached_server(cache)
    assert state is not None and shown["export"] == shown["url"] == state.url
    assert commands.detached_server_url(cache) == state.url

    # the CLI process has exited; the server is still there, on the printed URL
    engine = sa.create_engine(shown["url"])
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 40 + 2")).scalar() == 42
    finally:
        engine.dispose()
    with psycopg.connect(shown["dsn"]) as conn:
        assert conn.execute("show fsync").fetchone() == ("off",)

    again = run_cli("--cache-dir", str(cache), "up", "--detach", cwd=workdir)
    assert again.returncode == 0 and "already up" in again.stdout
    assert printed(again.stdout)["url"] == state.url

    stopped = run_cli("down", "--cache-dir", str(cache), cwd=workdir)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the server (pid {state.pid})" in stopped.stdout
    assert not lifetime.pid_alive(state.pid)
    assert not Path(state.run_dir).exists()
    assert not (cache / commands.STATE_FILE).exists()
    assert commands.detached_server_url(cache) is None

    none = run_cli("down", "--cache-dir", str(cache), cwd=workdir)
    assert none.returncode == 0 and "no detached server is up" in none.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_in_the_foreground_stops_on_a_signal(workdir: Path, cache: Path,
                                                sig: signal.Signals) -> None:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("DBTEST_")}
    proc = subprocess.Popen([sys.executable, "-m", "dbtest.cli", "--cache-dir", str(cache),
                             "up"], cwd=workdir, env=clean_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
        shown = printed("".join(lines))
        with psycopg.connect(shown["dsn"]) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        run_dir = lines[0].rsplit("data in ", 1)[1].strip()
        postmaster = int(lines[0].split("pid ", 1)[1].split(",", 1)[0])
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert not lifetime.pid_alive(postmaster)
    assert not Path(run_dir).exists()


def test_url_error_is_one_masked_line_without_traceback(workdir: Path) -> None:
    proc = run_cli("--backend", "url", "--url", SECRET_URL, "up", cwd=workdir)

    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dbtest: error: ")
    assert "x:***@127.0.0.1:1/db" in lines[0]
    assert "secret" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_options_after_the_subcommand_win_over_the_environment(workdir: Path) -> None:
    proc = run_cli("up", "--url", SECRET_URL, cwd=workdir,
                   env={"DBTEST_URL": "postgresql://a:envpw@127.0.0.1:2/other"})
    assert proc.returncode == 1
    assert "127.0.0.1:1/db" in proc.stderr and "envpw" not in proc.stderr


def test_bad_backend_is_a_usage_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--backend", "nope", "doctor"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    assert cli.main(["doctor", "--backend", "nope"]) == 2
    assert cli.main([]) == 2  # no subcommand


def test_port_in_use_is_reported_before_anything_starts(
        workdir: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["--cache-dir", str(cache), "up", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dbtest: error: port {port} on 127.0.0.1 is already in use")


def test_down_refuses_a_record_without_dbtest_mark(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache_dir = workdir / "cache"
    cache_dir.mkdir()
    foreign = workdir / "someone-elses"
    foreign.mkdir()
    record = commands.DetachedServer("postgresql://x@/db", "dbname=db", os.getpid(),
                                     str(foreign), "local", "15", str(workdir / "e.json"), 0.0)
    (cache_dir / commands.STATE_FILE).write_text(json.dumps(record.__dict__))

    assert cli.main(["--cache-dir", str(cache_dir), "down"]) == 1

    assert "refusing to stop" in capsys.readouterr().err
    assert foreign.exists() and (cache_dir / commands.STATE_FILE).exists()


def test_keyboard_interrupt_exits_130(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(settings: object) -> None:
        raise KeyboardInterrupt

    doctor = dataclasses.replace(cli.SUBCOMMANDS["doctor"], function=interrupted)
    monkeypatch.setitem(cli.SUBCOMMANDS, "doctor", doctor)
    assert cli.main(["doctor"]) == 130


# -- clean ------------------------------------------------------------------------------
@pytest.fixture
def litter(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A cache and run folders holding one of each thing clean removes, and look-alikes
    it must keep. /dev/shm and the temp dir are redirected, so other runs are untouched."""
    shm, tmp, cache_dir = workdir / "shm", workdir / "tmp", workdir / "cache"
    for folder in (shm, tmp, cache_dir / "tmp"):
        folder.mkdir(parents=True)
    monkeypatch.setattr(local, "TMPFS", shm)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    dead = subprocess.Popen(["true"])
    dead.wait()

    now = time.time_ns()
    cluster = cache_dir / "clusters" / "pg15-0123456789abcdef"
    current, previous = f"gen-{now - 120 * 10**9}", f"gen-{now - 300 * 10**9}"
    old = f"gen-{now - 600 * 10**9}"
    for gen in (current, previous, old):
        (cluster / gen).mkdir(parents=True)
        (cluster / gen / "PG_VERSION").write_text("15\n")
    (cluster / "current").symlink_to(current)

    def run_dir(base: Path, name: str, owner: int | None) -> Path:
        (base / name / "data").mkdir(parents=True)
        (base / name / "data" / "base.file").write_bytes(b"x" * 1000)
        if owner is not None:
            lifetime.mark_owned(base / name, owner)
            if owner != os.getpid():
                # an hour ago: older dbtest's folders of dead owners are left 5 min for
                # their background copy into the cache
                an_hour_ago = time.time() - 3600
                os.utime(base / name / lifetime.OWNED_MARK, (an_hour_ago, an_hour_ago))
        return base / name

    registered = run_dir(workdir / "elsewhere", "dbtest-regorphn", dead.pid)
    reg = lifetime.Registration(dead.pid, dead.pid, str(registered), 0.0)
    reg.write(cache_dir / "run")
    from dbtest.provision import _spares as spare_copies

    ns = spare_copies.namespace_dir(shm, cache_dir)
    (ns / "spares" / cluster.name).mkdir(parents=True)
    spare = ns / "spares" / cluster.name / "gen-1.1-1.ready"  # of a generation long gone
    spare.mkdir()
    stale_state = commands.DetachedServer("postgresql://x@/db", "dbname=db", dead.pid,
                                          str(workdir / "gone"), "local", "15",
                                          str(workdir / "e.json"), 0.0)
    (cache_dir / commands.STATE_FILE).write_text(json.dumps(stale_state.__dict__))
    trash = run_dir(shm, "dbtest-qwertyui.trash", None)
    return {
        "old generation": cluster / old,
        "orphan": run_dir(cache_dir / "tmp", "dbtest-abcdefgh", dead.pid),
        "orphan in temp dir": run_dir(tmp, "dbtest-initdb-ab_cdefg", dead.pid),
        "registered orphan": registered,
        "spares": spare,
        "trash": trash,
        "stale state": cache_dir / commands.STATE_FILE,
        # kept:
        "current generation": cluster / current,
        "previous generation": cluster / previous,
        "live run dir": run_dir(shm, "dbtest-liveliv1", os.getpid()),
        "unmarked": run_dir(shm, "dbtest-unmarked", None),
        "unrelated": run_dir(tmp, "something-else", dead.pid),
        "cache": cache_dir,
    }


KEPT = ("current generation", "previous generation", "live run dir", "unmarked", "unrelated")


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_clean_dry_run_lists_and_deletes_nothing(
        litter: dict[str, Path], workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = all_files(workdir)

    assert cli.main(["--cache-dir", str(litter["cache"]), "clean", "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert all_files(workdir) == before
    assert out.startswith("would remove:")
    for name, path in litter.items():
        if name == "cache":
            continue
        listed = any(line.endswith(f": {path}") for line in out.splitlines())
        assert listed == (name not in KEPT), name
    assert "KiB" in out  # sizes are shown


def test_clean_removes_only_what_dbtest_marked(
        litter: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--cache-dir", str(litter["cache"]), "clean"]) == 0

    assert capsys.readouterr().out.startswith("removed:")
    for name, path in litter.items():
        assert path.exists() == (name in KEPT or name == "cache"), name
    assert not list((litter["cache"] / "run").iterdir())  # the registry entry went too

    assert cli.main(["--cache-dir", str(litter["cache"]), "clean"]) == 0
    assert "nothing to clean" in capsys.readouterr().out


def test_clean_drops_stale_databases_of_the_cached_cluster(cache: Path) -> None:
    import dbtest
    from dbtest._databases import admin_connection, create_database
    from dbtest.provision import Provisioner
    from dbtest.settings import resolve

    settings = resolve({"cache_dir": cache, "backend": "local"}, environ={}, pyproject=None)
    # a run that built a template keeps its cluster: with it, what a crash left behind
    provisioner = Provisioner(settings)
    server = provisioner.start()
    with admin_connection(server.dsn) as admin:
        create_database(admin, "dbtest_w_dead", purpose="worker", mark={"pid": 2**22 + 7})
        create_database(admin, "dbtest_snap_keep", purpose="snapshot")
        admin.execute('CREATE DATABASE "not_dbtests"')
    provisioner.stop(persist=True)
    listed = commands.clean_templates(settings, dry_run=True)
    assert [i.path.name for i in listed] == ["dbtest_w_dead"]
    removed = commands.clean_templates(settings)
    assert [(i.path.name, i.removed) for i in removed] == [("dbtest_w_dead", True)]
    with dbtest.ephemeral_postgres(settings=settings) as again, \
            admin_connection(again.dsn) as admin:
        names = {r[0] for r in admin.execute("SELECT datname FROM pg_database").fetchall()}
    assert "dbtest_w_dead" not in names
    assert {"dbtest_snap_keep", "not_dbtests"} <= names  # user data is never cleaned


@pytest.fixture(autouse=True)
def _no_detached_server_left(cache: Path) -> Iterator[None]:
    """A failing test must not leave a detached server running."""
    yield
    state = commands.detached_server(cache)
    if state is not None:
        lifetime.retire(Path(state.entry), lifetime.Registration(state.pid, state.pid,
                                                                 state.run_dir, 0.0))
        (cache / commands.STATE_FILE).unlink(missing_ok=True)


def test_generations_replaced_a_moment_ago_are_kept(tmp_path: Path) -> None:
    now = time.time_ns()
    minute = 60 * 10**9
    names = {
        "old": now - 10 * minute,        # replaced by "previous" 5 minutes ago: stale
        "previous": now - 5 * minute,    # replaced by "current" seconds ago: kept
        "current": now - 10**9,
    }
    for ns in names.values():
        (tmp_path / f"gen-{ns}").mkdir()
    (tmp_path / "current").symlink_to(f"gen-{names['current']}")
    (tmp_path / f"gen-{now - 2 * minute}.partial").mkdir()  # abandoned: stale
    (tmp_path / f"gen-{now}.partial").mkdir()  # being written: kept

    assert local.stale_generations(tmp_path) == [
        tmp_path / f"gen-{names['old']}", tmp_path / f"gen-{now - 2 * minute}.partial"]


def test_output_into_a_closed_pipe_is_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone, as after `dbtest doctor | head -1`
    out = io.TextIOWrapper(os.fdopen(write_end, "wb"), write_through=True)
    monkeypatch.setattr("sys.stdout", out)
    assert cli.main(["doctor"]) in (0, 1)  # no BrokenPipeError escapes
