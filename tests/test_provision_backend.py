"""The :class:`~dbtest.provision.Backend` protocol and the provision package's surface:
each backend started, stopped (with and without persisting) and described against real
servers; the package's own imports (no cycles, no private names across modules)."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import dbtest
import dbtest.provision as provision
from dbtest import commands
from dbtest.provision import (
    Backend,
    DetachedBackend,
    DockerBackend,
    LocalBackend,
    NoDetachedServer,
    PostgresServer,
    Provisioner,
    UrlBackend,
    attached_sessions,
    join_or_start,
)
from dbtest.settings import Settings, resolve

PROVISION = Path(provision.__file__).parent


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own cache dir, so its generations are this module's alone."""
    return tmp_path_factory.mktemp("cache")


def settings_for(cache: Path, root: Path, **values: object) -> Settings:
    return resolve({"cache_dir": cache, **values}, environ={}, pyproject=None, root=root)


@pytest.fixture(scope="module")
def tcp_server() -> Iterator[PostgresServer]:
    with dbtest.ephemeral_postgres("local", port=0) as server:
        yield server


def answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def test_every_backend_is_a_backend(tmp_path: Path) -> None:
    from dbtest.provision import LocalCluster, find_binaries

    cluster = LocalCluster(find_binaries(None), tmp_path)
    for backend in (LocalBackend(cluster), UrlBackend("postgresql://u@h/db"),
                    DockerBackend("postgres:16", tmp_path), DetachedBackend(tmp_path, tmp_path)):
        assert isinstance(backend, Backend), type(backend).__name__
    assert LocalBackend(cluster).can_persist
    assert not UrlBackend("postgresql://u@h/db").can_persist


def test_local_stop_without_persisting_discards(cache: Path, tmp_path: Path) -> None:
    provisioner = Provisioner(settings_for(cache, tmp_path, backend="local"))
    server = provisioner.start()
    backend = provisioner.backend
    assert isinstance(backend, LocalBackend) and backend.name == "local"
    run_dir = backend.run_dir
    assert run_dir is not None and run_dir.is_dir() and backend.entry is not None
    assert str(run_dir) in backend.describe()
    generation = backend.cluster.current_generation()
    provisioner.stop()
    assert provisioner.backend is None and provisioner.server is None
    assert not run_dir.exists() and not answers(server.dsn)
    assert backend.cluster.current_generation() == generation  # nothing kept
    provisioner.stop()  # a second stop does nothing


def test_local_stop_with_persisting_keeps_the_data(cache: Path, tmp_path: Path) -> None:
    provisioner = Provisioner(settings_for(cache, tmp_path, backend="local"))
    server = provisioner.start()
    backend = provisioner.backend
    assert isinstance(backend, LocalBackend)
    before = backend.cluster.current_generation()
    server.create_database("dbtest_kept_by_persist", purpose="test")
    run_dir = backend.run_dir
    provisioner.stop(persist=True)
    assert run_dir is not None and not run_dir.exists()
    after = backend.cluster.current_generation()
    assert after is not None and after != before
    # the next start copies the persisted generation: the database is there
    again = Provisioner(settings_for(cache, tmp_path, backend="local"))
    restarted = again.start()
    try:
        assert answers(restarted.dsn_for("dbtest_kept_by_persist"))
    finally:
        again.stop()


def test_url_backend_stop_leaves_the_server_running(tcp_server: PostgresServer,
                                                    cache: Path, tmp_path: Path) -> None:
    url = tcp_server.params.url(driver="")
    provisioner = Provisioner(settings_for(cache, tmp_path, backend="url", url=url))
    server = provisioner.start()
    backend = provisioner.backend
    assert isinstance(backend, UrlBackend) and not backend.can_persist
    assert tcp_server.params.password is not None
    assert tcp_server.params.password not in backend.describe()  # masked
    provisioner.stop(persist=True)  # persisting means nothing to a server not ours
    assert answers(server.dsn) and answers(tcp_server.dsn)


def test_detached_backend_without_a_server_says_how(tmp_path: Path) -> None:
    with pytest.raises(NoDetachedServer, match="dbtest up --detach"):
        DetachedBackend(tmp_path, tmp_path).start()
    # auto then starts a server of its own
    provisioner = Provisioner(settings_for(tmp_path / "cache", tmp_path))
    provisioner.start()
    try:
        assert isinstance(provisioner.backend, LocalBackend)
    finally:
        provisioner.stop()


def test_detached_backend_joins_as_a_session(cache: Path, tmp_path: Path) -> None:
    settings = settings_for(cache, tmp_path, backend="local")
    up = commands.up(settings, detach=True)
    try:
        assert up.pid is not None
        provisioner = Provisioner(settings.replace(backend="auto"))
        server = provisioner.start()
        backend = provisioner.backend
        assert isinstance(backend, DetachedBackend)
        assert server.details["pid"] == up.pid and f"pid {up.pid}" in backend.describe()
        assert len(attached_sessions(cache, up.pid)) == 1  # down would refuse now
        provisioner.stop(persist=True)
        assert attached_sessions(cache, up.pid) == []
        assert answers(server.dsn)  # the session ended; the server runs on
    finally:
        commands.down(settings, force=True)


def test_join_or_start_hands_back_what_it_cannot_share(tcp_server: PostgresServer,
                                                       cache: Path, tmp_path: Path) -> None:
    settings = settings_for(cache, tmp_path, backend="url",
                            url=tcp_server.params.url(driver=""))
    server, provisioner = join_or_start(settings, "run-not-shared", os.getpid())
    assert provisioner is not None and isinstance(provisioner.backend, UrlBackend)
    assert answers(server.dsn)
    assert not (cache / "shared" / "run-not-shared.json").exists()  # nothing to join
    provisioner.stop()


def test_the_surface_exports_what_it_lists() -> None:
    assert provision.__all__ == sorted(provision.__all__, key=lambda n: (
        0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    for name in provision.__all__:
        assert getattr(provision, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        provision.nope  # noqa: B018


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` of every import outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
    return found


def test_provision_modules_use_no_private_names_of_each_other() -> None:
    bad = []
    for path in sorted(PROVISION.glob("*.py")):
        for module, name, line in _imports(path):
            if not module.startswith("dbtest.provision") or name is None:
                continue
            is_module = (PROVISION / f"{name}.py").exists() and module == "dbtest.provision"
            if name.startswith("_") and not is_module:
                bad.append(f"{path.name}:{line} imports {module}.{name}")
    assert bad == []


def test_provision_modules_import_no_cycle() -> None:
    """Every import counts (also those inside functions): a cycle is a cycle."""
    graph: dict[str, set[str]] = {}
    for path in PROVISION.glob("*.py"):
        deps = set()
        for module, name, _ in _imports(path):
            target = f"{module}.{name}" if name else module
            if target.startswith("dbtest.provision._"):
                deps.add(target.removeprefix("dbtest.provision.").split(".")[0])
            elif module.startswith("dbtest.provision._"):
                deps.add(module.removeprefix("dbtest.provision.").split(".")[0])
        graph[path.stem] = deps - {path.stem}
    assert graph["_local"] and graph["_provisioner"]  # the walk found imports at all

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for dep in graph.get(start, ()):
            if dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})):
                return True
        return False

    assert [m for m in sorted(graph) if reaches(m, m, {m})] == []
