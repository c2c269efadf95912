"""A server never outlives its owner.

Each local server is registered in ``<cache>/run/<id>.json``, and a small watchdog
process holds the read end of a pipe whose write end only the owner holds. When the
owner dies (even by ``kill -9``) the pipe closes, and the watchdog stops the server
and removes its data dir within a second. Each new start also reaps entries whose
owner is gone, in case the watchdog itself was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["OWNED_MARK", "Registration", "pid_alive", "reap", "start_watchdog", "stop_postmaster"]

#: file put in every run folder dbtest creates; nothing without it is ever deleted
OWNED_MARK = ".dbtest-owned"


@dataclass(frozen=True)
class Registration:
    """One running server, as written in the registry."""

    owner_pid: int
    postmaster_pid: int
    run_dir: str
    started: float

    def write(self, registry: Path) -> Path:
        registry.mkdir(parents=True, exist_ok=True)
        path = registry / f"{self.postmaster_pid}-{self.owner_pid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)
        return path


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_postmaster(pid: int, run_dir: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid)  # no /proc (macOS): trust the registry
    return any(run_dir.encode() in arg for arg in cmdline)


def stop_postmaster(pid: int, run_dir: str, *, fast: bool = True, timeout: float = 5.0) -> None:
    """Stop the postmaster ``pid`` serving ``run_dir`` (SIGINT, then SIGQUIT, SIGKILL)."""
    if not _is_our_postmaster(pid, run_dir):
        return
    for sig, wait in ((signal.SIGINT if fast else signal.SIGQUIT, timeout),
                      (signal.SIGQUIT, 2.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.002)


def remove_run_dir(run_dir: str, *, background: bool = False) -> None:
    """Delete a run folder, but only one that dbtest marked as its own.

    ``background`` renames it aside and lets a detached ``rm -rf`` delete it, so the
    owner does not wait on ~1,000 unlinks.
    """
    path = Path(run_dir)
    if not (path / OWNED_MARK).exists():
        return
    if background:
        trash = path.with_name(path.name + ".trash")
        try:
            path.rename(trash)
            subprocess.Popen(["rm", "-rf", str(trash)], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            return
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)


def reap(registry: Path) -> list[str]:
    """Stop servers whose owner died and delete their run dirs. Returns what was reaped."""
    reaped = []
    if not registry.is_dir():
        return reaped
    for entry in registry.glob("*.json"):
        try:
            reg = Registration(**json.loads(entry.read_text()))
        except (OSError, ValueError, TypeError):
            entry.unlink(missing_ok=True)
            continue
        if pid_alive(reg.owner_pid):
            continue
        stop_postmaster(reg.postmaster_pid, reg.run_dir, fast=False)
        remove_run_dir(reg.run_dir)
        entry.unlink(missing_ok=True)
        reaped.append(reg.run_dir)
    return reaped


def start_watchdog(reg: Registration, entry: Path) -> subprocess.Popen[bytes]:
    """Start the watchdog for ``reg``. Keep the returned process's ``stdin`` open: closing
    it after writing ``b"done"`` releases the watchdog; closing it without (the owner
    died) makes the watchdog stop the server."""
    return subprocess.Popen(
        [sys.executable, "-S", "-m", "dbtest.provision.lifetime",
         str(reg.postmaster_pid), reg.run_dir, str(entry)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # its own session: a Ctrl-C to the test run's process group must not kill it
        start_new_session=True, close_fds=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def _watch(pid: int, run_dir: str, entry: str) -> None:
    message = sys.stdin.buffer.read()  # returns at EOF: the owner closed it or died
    if message.strip() == b"done":
        return
    stop_postmaster(pid, run_dir, fast=False)
    remove_run_dir(run_dir)
    Path(entry).unlink(missing_ok=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch(int(sys.argv[1]), sys.argv[2], sys.argv[3])
