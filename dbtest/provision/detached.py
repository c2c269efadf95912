"""The record ``dbtest up --detach`` leaves in the cache dir (``up.json``), so later
runs and commands find the running server. Light on imports: every ``auto`` start
reads it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from dbtest.errors import ProvisionError
from dbtest.provision import lifetime

__all__ = ["STATE_FILE", "DetachedServer", "detached_server", "detached_server_url",
           "state_lock", "state_path", "write_state"]

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

    def running(self) -> bool:
        """Whether the server still runs (its pid is a postmaster serving ``run_dir``)."""
        return lifetime.is_our_postmaster(self.pid, self.run_dir)


def state_path(cache_dir: Path) -> Path:
    return cache_dir / STATE_FILE


def detached_server(cache_dir: Path) -> DetachedServer | None:
    """The record of ``dbtest up --detach`` in ``cache_dir``, running or not; ``None``
    when there is none (or it is unreadable)."""
    try:
        data = json.loads(state_path(cache_dir).read_text())
        return DetachedServer(**data)
    except (OSError, ValueError, TypeError):
        return None


def detached_server_url(cache_dir: Path) -> str | None:
    """The URL of the server ``dbtest up --detach`` left running, or ``None``.

    Cheap (one small file and one ``/proc`` read), so settings resolution and the
    plugin may call it on every run to fall back to that server.
    """
    found = detached_server(cache_dir)
    return found.url if found is not None and found.running() else None


def write_state(cache_dir: Path, state: DetachedServer) -> Path:
    path = state_path(cache_dir)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    # 0600: with --port the URL holds the server's password
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(state), fh, indent=2)
    tmp.replace(path)
    return path


@contextlib.contextmanager
def state_lock(cache_dir: Path) -> Iterator[None]:
    """Serialise ``up --detach`` and ``down``: two at once must not start two servers."""
    from filelock import FileLock, Timeout

    from dbtest.provision.local import make_dir

    make_dir(cache_dir)
    lock = cache_dir / "up.lock"
    try:
        with FileLock(str(lock), timeout=60):
            yield
    except Timeout:
        raise ProvisionError(f"another dbtest up/down has held {lock} for 60 s; wait for it "
                             f"or stop it (fuser {lock} names it).") from None
