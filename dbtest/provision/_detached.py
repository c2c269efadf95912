"""The record ``dbtest up --detach`` leaves in the cache dir (``up.json``), so later
runs and commands find the running server. Light on imports: every ``auto`` start
reads it.

A detached server belongs to one project: ``auto`` joins it only from the project
root it was started for (a cache dir is often shared by every project of a user).
Each session that joins registers itself in ``<cache>/attached/<pid>/`` so that
``dbtest down`` can refuse to pull the server from under running tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dbtest.errors import ProvisionError
from dbtest.provision import _lifetime as lifetime

__all__ = ["STATE_FILE", "DetachedServer", "attach", "attached_sessions", "detached_for",
           "detached_server", "detached_server_url", "detached_servers", "forget_sessions",
           "remove_state", "state_lock", "state_path", "write_state"]

#: the detached server's record, in the cache dir
STATE_FILE = "up.json"


@dataclass(frozen=True)
class DetachedServer:
    """What ``dbtest up --detach`` wrote to ``<cache_dir>/up.json``."""

    url: str
    dsn: str
    pid: int
    run_dir: str
    backend: str
    version: str
    #: its registry entry (the postmaster is its own owner there)
    entry: str
    started: float
    #: the project root ``dbtest up`` ran for ("" in records of older dbtest: joined by
    #: no ``auto`` run)
    project_root: str = ""

    def describe(self) -> str:
        """``detached, pid N, started by dbtest up at <time>`` (for summaries)."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"detached, pid {self.pid}, started by dbtest up at {when}"

    def running(self) -> bool:
        """Whether the server still runs (its pid is a postmaster serving ``run_dir``)."""
        return lifetime.is_our_postmaster(self.pid, self.run_dir)


def state_path(cache_dir: Path) -> Path:
    return cache_dir / STATE_FILE


def detached_servers(cache_dir: Path) -> list[DetachedServer]:
    """Every record in ``up.json`` (one per project that ran ``dbtest up --detach`` with
    this cache dir), running or not."""
    try:
        data = json.loads(state_path(cache_dir).read_text())
    except (OSError, ValueError):
        return []
    items = data.get("servers", []) if isinstance(data, dict) and "url" not in data \
        else [data]  # one record: the format of older dbtest
    found = []
    for item in items:
        with contextlib.suppress(TypeError):
            found.append(DetachedServer(**item))
    return found


def detached_server(cache_dir: Path, project_root: Path | None = None
                    ) -> DetachedServer | None:
    """The record of ``dbtest up --detach`` for ``project_root`` (without it: the first
    one) in ``cache_dir``, running or not; ``None`` when there is none (or it is
    unreadable). A record of older dbtest (no project) counts for every project."""
    records = detached_servers(cache_dir)
    if project_root is None:
        return records[0] if records else None
    wanted = str(project_root.resolve())
    return next((r for r in records if r.project_root == wanted), None) or next(
        (r for r in records if not r.project_root), None)


def detached_server_url(cache_dir: Path, project_root: Path | None = None) -> str | None:
    """The URL of the server ``dbtest up --detach`` left running, or ``None``.

    With ``project_root``, only a server started for that project counts (what
    ``auto`` joins). Cheap (one small file and one ``/proc`` read).
    """
    found = detached_for(cache_dir, project_root)
    return found.url if found is not None else None


def detached_for(cache_dir: Path, project_root: Path | None = None) -> DetachedServer | None:
    """The running detached server of ``cache_dir`` started for ``project_root`` (without
    it: any running one)."""
    records = detached_servers(cache_dir)
    if project_root is not None:
        wanted = str(project_root.resolve())
        records = [r for r in records if r.project_root == wanted]
    return next((r for r in records if r.running()), None)


def attach(cache_dir: Path, server_pid: int) -> Path | None:
    """Register this process as a session using the detached server ``server_pid``."""
    folder = cache_dir / "attached" / str(server_pid)
    path = folder / f"{lifetime.identity()}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": os.getpid(), "argv": sys.argv[:6],
                                    "cwd": os.getcwd(), "since": time.time()}))
    except OSError:
        return None  # a read-only cache: down cannot see this session, nothing else
    return path


def attached_sessions(cache_dir: Path, server_pid: int) -> list[dict[str, Any]]:
    """Live sessions using the detached server ``server_pid``; forgets dead ones."""
    folder = cache_dir / "attached" / str(server_pid)
    live = []
    with contextlib.suppress(OSError):
        for path in sorted(folder.glob("*.json")):
            if not lifetime.identity_alive(path.stem):
                path.unlink(missing_ok=True)
                continue
            with contextlib.suppress(OSError, ValueError):
                live.append(json.loads(path.read_text()))
    return live


def forget_sessions(cache_dir: Path, server_pid: int) -> None:
    """Drop the session records of a server that is gone."""
    import shutil

    shutil.rmtree(cache_dir / "attached" / str(server_pid), ignore_errors=True)


def write_state(cache_dir: Path, state: DetachedServer) -> Path:
    """Add (or replace) the record of ``state``'s project. Hold :func:`state_lock`."""
    others = [r for r in detached_servers(cache_dir) if r.project_root != state.project_root]
    return _write(cache_dir, [*others, state])


def remove_state(cache_dir: Path, state: DetachedServer) -> None:
    """Forget ``state``'s record (the file goes with the last one). Hold :func:`state_lock`."""
    _write(cache_dir, [r for r in detached_servers(cache_dir) if r != state])


def _write(cache_dir: Path, records: list[DetachedServer]) -> Path:
    path = state_path(cache_dir)
    if not records:
        path.unlink(missing_ok=True)
        return path
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    # 0600: with --port the URL holds the server's password
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"servers": [asdict(r) for r in records]}, fh, indent=2)
    tmp.replace(path)
    return path


@contextlib.contextmanager
def state_lock(cache_dir: Path) -> Iterator[None]:
    """Serialise ``up --detach`` and ``down``: two at once must not start two servers."""
    from filelock import FileLock, Timeout

    from dbtest.provision._files import make_dir

    make_dir(cache_dir)
    lock = cache_dir / "up.lock"
    try:
        with FileLock(str(lock), timeout=60):
            yield
    except Timeout:
        raise ProvisionError(f"another dbtest up/down has held {lock} for 60 s; wait for it "
                             f"or stop it (fuser {lock} names it).") from None
