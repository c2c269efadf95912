"""Who uses a dbtest container, and its watchdog.

A dbtest container is shared by every process that uses the same image and cache dir
(concurrent runs, xdist workers) and kept running between runs once it holds templates,
so a later run finds them already migrated. Each process that uses it holds a *lease*: a
file ``<cache>/docker/<container>/<pid>.lease``, taken and given back under
``<cache>/docker/<container>.lock``. A small watchdog process per lease holds the read end
of a pipe whose write end only the owner holds: when the owner dies (``kill -9``
included) the pipe closes, the watchdog drops the lease and, when no live process holds
another one, removes the container. Ryuk, testcontainers' own reaper, is not needed (a
machine without a registry cannot pull it).

Run as ``python -m dbtest.provision._docker_lease LOCK LEASE CONTAINER``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dbtest.provision._lifetime import pid_alive, release_watchdog

__all__ = ["LOCK_TIMEOUT", "drop_dead_leases", "lease_lock", "live_leases", "remove_container",
           "start_watchdog", "take_lease"]

LOCK_TIMEOUT = 120.0
LEASE_SUFFIX = ".lease"


@contextlib.contextmanager
def lease_lock(lock: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``lock`` (an ``flock``, released by the kernel if its holder dies)."""
    from filelock import FileLock, Timeout

    from dbtest.errors import ProvisionError

    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock), timeout=timeout):
            yield
    except Timeout:
        raise ProvisionError(f"another dbtest process has held {lock} for {timeout:.0f} s "
                             f"(starting or stopping its container); wait for it or stop it "
                             f"(fuser {lock} names it).") from None


def _lease_pid(path: Path) -> int | None:
    try:
        return int(path.name.removesuffix(LEASE_SUFFIX))
    except ValueError:
        return None


def live_leases(folder: Path) -> list[int]:
    """Pids of the live processes that hold a lease in ``folder``."""
    if not folder.is_dir():
        return []
    pids = (_lease_pid(p) for p in folder.glob(f"*{LEASE_SUFFIX}"))
    return sorted(pid for pid in pids if pid is not None and pid_alive(pid))


def drop_dead_leases(folder: Path) -> list[int]:
    """Delete the leases of processes that are gone (their watchdog died with them)."""
    dropped = []
    for path in folder.glob(f"*{LEASE_SUFFIX}") if folder.is_dir() else []:
        pid = _lease_pid(path)
        if pid is None or not pid_alive(pid):
            path.unlink(missing_ok=True)
            dropped.append(pid or 0)
    return dropped


def take_lease(folder: Path, pid: int) -> Path:
    """Record that ``pid`` uses the container (call under the lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}{LEASE_SUFFIX}"
    path.write_text(str(pid))
    return path


def remove_container(client: Any, container: str, key: str) -> bool:
    """Remove ``container`` (a name or an id), but only while it carries dbtest's label
    for ``key``; ``False`` when it is gone already or is not ours."""
    import docker.errors

    try:
        found = client.containers.get(container)
        if found.labels.get("dbtest.container") != key:
            return False
        found.remove(force=True, v=True)
    except docker.errors.NotFound:
        return False
    return True


def start_watchdog(lock: Path, lease: Path, container: str,
                   docker_host: str | None) -> subprocess.Popen[bytes]:
    """Start the watchdog of ``lease`` on ``container`` (its name); keep the returned
    process's ``stdin`` open and release it with :func:`lifetime.release_watchdog` once
    the lease is given back."""
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host  # the daemon testcontainers found, however
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "dbtest.provision._docker_lease", str(lock), str(lease),
         container],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # its own session: a Ctrl-C to the test run's process group must not kill it
        start_new_session=True, close_fds=True, env=env)


def give_back(lease: Path, watchdog: subprocess.Popen[bytes] | None) -> None:
    """Drop ``lease`` and release its watchdog (call under the lock)."""
    lease.unlink(missing_ok=True)
    if watchdog is not None:
        release_watchdog(watchdog)


def _watch(lock: Path, lease: Path, container: str) -> None:
    import docker  # before waiting: the owner's death is then acted on at once

    message = sys.stdin.buffer.read()  # returns at EOF: the owner closed it or died
    if message.strip() == b"done":
        return
    key = lease.parent.name.removeprefix("dbtest-pg-")
    with lease_lock(lock):
        lease.unlink(missing_ok=True)
        if live_leases(lease.parent):
            return  # another run still uses the container
        client = docker.from_env()
        try:
            remove_container(client, container, key)
        finally:
            client.close()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
