"""``dbtest up`` and ``dbtest down``: a server for later runs, started and stopped.

Python code may call them directly::

    from dbtest import commands
    from dbtest.settings import resolve

    server = commands.up(resolve(), detach=True)
    ...
    commands.down(resolve())
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbtest import provision
from dbtest._commands._spec import PROG, Command, Invocation, say
from dbtest.errors import ConfigError, DbtestError, ProvisionError, RefusedError, mask_url
from dbtest.provision import (
    DetachedServer,
    attached_sessions,
    detached_server,
    detached_servers,
    forget_sessions,
    remove_state,
    state_lock,
    state_path,
    write_state,
)

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["COMMANDS", "DownResult", "UpResult", "down", "up"]


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

    :param detach: leave the server running for later runs (stop it with ``dbtest down``)
    :param on_ready: called with the result once a foreground server answers
    :param stop: set it to stop a foreground server (from another thread)
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
    from dbtest.provision import LocalBackend, Provisioner

    # a detached start is watched until the server answers: a crash half-way leaves
    # nothing behind
    provisioner = Provisioner(settings, detached=True)
    server = provisioner.start()
    if server.backend == "url":
        return UpResult(server.url, server.dsn, "url", server.version, None, None,
                        detached=False, external=True)
    backend = provisioner.backend
    if not isinstance(backend, LocalBackend):
        provisioner.stop()
        raise ConfigError(_NO_DOCKER_DETACH)
    try:
        if backend.run_dir is None or backend.entry is None:
            raise ProvisionError("the server started but left no run folder or registry entry "
                                 "to keep it detached; run `dbtest doctor` and retry")
        state = DetachedServer(server.url, server.dsn, int(server.details["pid"]),
                               str(backend.run_dir), server.backend, server.version,
                               str(backend.entry), time.time(),
                               project_root=str(settings.root.resolve()))
        path = write_state(settings.cache_dir, state)
    except BaseException:
        provisioner.stop()
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
        if pid is not None and not provision.pid_alive(pid):
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
    """Stop the server ``dbtest up --detach`` started and delete its data.

    Also removes the docker backend's containers kept for reuse (see
    :func:`dbtest.provision.down_containers`).

    Only the server recorded in ``<cache_dir>/up.json`` is touched, and only when its
    run folder carries dbtest's mark. While test sessions use it, ``down`` refuses and
    lists them; ``force`` stops it anyway (their remaining tests then fail).

    :param force: stop the server even while test sessions use it
    """
    result = _down_detached(settings, force)
    from dbtest.provision import down_containers

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
        if run_dir.exists() and not (run_dir / provision.OWNED_MARK).exists():
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
        reg = provision.Registration(found.pid, found.pid, found.run_dir, found.started)
        provision.retire_server(Path(found.entry), reg)
        if provision.is_our_postmaster(found.pid, found.run_dir):
            raise ProvisionError(f"the server (pid {found.pid}) did not stop; kill it and run "
                                 f"dbtest down again.")
        remove_state(settings.cache_dir, found)
        forget_sessions(settings.cache_dir, found.pid)
    return DownResult(found=True, was_running=running, state_file=path, url=found.url,
                      pid=found.pid, run_dir=found.run_dir, sessions=sessions)




# -- the command line -------------------------------------------------------------------
def _print_server(result: UpResult, run: Invocation) -> None:
    # The output is valid shell (comments and one export): eval "$(dbtest up --detach)"
    if result.external:
        say(f"# {PROG}: the server at {mask_url(result.url)} answers (PostgreSQL "
            f"{result.version}, backend url); nothing to start")
        return
    where = f"pid {result.pid}, data in {result.run_dir}" if result.pid else result.backend
    state = "already up" if result.already_running else "up"
    say(f"# {PROG}: PostgreSQL {result.version} ({result.backend}) is {state}: {where}")
    say(f"# url: {result.url}")
    say(f"# dsn: {result.dsn}")
    say(f"export DBTEST_URL={shlex.quote(result.url)}")
    if result.detached:
        say(f"# stop it with: {run.again('down')}")
    else:
        say("# Ctrl-C stops it and deletes its data")


def _up_hooks(run: Invocation) -> dict[str, Any]:
    # a server in the foreground is printed once it answers, then the command blocks
    return {"on_ready": lambda started: _print_server(started, run)}


def _show_up(result: UpResult, run: Invocation) -> int:
    if run.arguments["detach"]:
        _print_server(result, run)
    else:
        print(f"{PROG}: stopped", file=sys.stderr)
    return 0


def _show_down(result: DownResult, run: Invocation) -> int:
    for name in result.containers:
        say(f"# {PROG}: removed the docker container {name} (kept for reuse)")
    for name, pids in result.containers_in_use.items():
        say(f"# {PROG}: left the docker container {name} running: in use by pid "
            f"{', '.join(map(str, pids))}")
    if not result.found:
        say(f"# {PROG}: no detached server is up (nothing recorded in {result.state_file})")
        return 0
    if result.sessions:
        say(f"# {PROG}: stopped while {len(result.sessions)} session(s) used it (--force): "
            + ", ".join(f"pid {s.get('pid')}" for s in result.sessions))
    if result.was_running:
        say(f"# {PROG}: stopped the server (pid {result.pid}) and deleted {result.run_dir}")
    else:
        say(f"# {PROG}: the detached server (pid {result.pid}) had stopped already; "
            f"removed what it left")
    say("unset DBTEST_URL")
    return 0


COMMANDS = (
    Command(up, _show_up, short={"detach": "-d"}, hooks=_up_hooks),
    Command(down, _show_down),
)
