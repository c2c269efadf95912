"""A server never outlives its owner.

Each local server is registered in ``<cache>/run/<id>.json``, and a small watchdog
process holds the read end of a pipe whose write end only the owner holds. When the
owner dies (even by ``kill -9``) the pipe closes, and the watchdog stops the server
and removes its data dir within a second. Each new start also reaps entries whose
owner is gone, in case the watchdog itself was killed.

A *detached* server (``dbtest up --detach``) has no watchdog: its registry entry names
the postmaster as its own owner, so the reaper keeps it while it runs and removes its
folder once it is gone.

Every folder dbtest creates carries :data:`OWNED_MARK`, a file holding the pid of the
process that owns the folder; nothing without it is ever deleted.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["OWNED_MARK", "Registration", "alive_since", "identity", "identity_alive", "in_use",
           "is_our_postmaster", "mark_owned", "orphans", "pid_alive", "process_start", "reap",
           "release_watchdog", "remove_run_dir", "retire", "retire_run_dir", "run_in_background",
           "spawn_detached", "start_watchdog", "stop_postmaster", "watch_server"]

#: file put in every run folder dbtest creates; nothing without it is ever deleted
OWNED_MARK = ".dbtest-owned"


def mark_owned(folder: Path, owner_pid: int) -> None:
    """Mark ``folder`` as dbtest's, owned by ``owner_pid`` (see :func:`in_use`)."""
    (folder / OWNED_MARK).write_text(str(owner_pid))


def _mark_owner(folder: Path) -> tuple[int, float] | None:
    """The owner's pid and when the mark was written (its owner had started by then)."""
    mark = folder / OWNED_MARK
    try:
        return int(mark.read_text().strip()), mark.stat().st_mtime
    except (OSError, ValueError):
        return None  # no mark, or one from before marks held a pid


_BOOT_TIME: list[float] = []


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or ``None`` when unknown
    (no ``/proc``, or no such process)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        if not _BOOT_TIME:
            with open("/proc/stat") as fh:
                _BOOT_TIME.append(float(next(line.split()[1] for line in fh
                                             if line.startswith("btime "))))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return _BOOT_TIME[0] + ticks / os.sysconf("SC_CLK_TCK")


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def identity(pid: int | None = None) -> str:
    """``<pid>-<start ticks>``: names a process, unlike a pid that may be reused."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_ticks(pid) or 0}"


def identity_alive(token: str) -> bool:
    """Whether the process :func:`identity` named still runs (not a reuse of its pid)."""
    try:
        pid, ticks = (int(part) for part in token.split("-", 1))
    except ValueError:
        return False
    if not pid_alive(pid):
        return False
    now = _start_ticks(pid)
    return ticks == 0 or now is None or now == ticks


def alive_since(pid: int, since: float) -> bool:
    """Whether the process ``pid`` that existed at time ``since`` still lives.

    A pid alone is not proof: once its process died, the number may be given to a new
    one. A process that started after ``since`` (1 s of slack: boot time has whole
    seconds) is not the one that was there, so its pid's first owner is provably gone.
    """
    if not pid_alive(pid):
        return False
    started = process_start(pid)
    return started is None or started <= since + 1.0


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


def is_our_postmaster(pid: int, run_dir: str) -> bool:
    """Whether ``pid`` is a live postmaster serving a data dir inside ``run_dir``.

    A pid alone is not enough: after a reboot or a crash it may belong to anyone.
    """
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the registry
    # "/run/dbtest-ab/" so that a run dir never matches a longer sibling's name
    inside = run_dir.rstrip("/").encode() + b"/"
    return any(inside in arg for arg in cmdline)


def stop_postmaster(pid: int, run_dir: str, *, fast: bool = True, timeout: float = 5.0) -> None:
    """Stop the postmaster ``pid`` serving ``run_dir`` (SIGINT, then SIGQUIT, SIGKILL)."""
    if not is_our_postmaster(pid, run_dir):
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


def in_use(folder: Path) -> bool:
    """Whether a live process still needs ``folder`` (a run or initdb folder).

    True when the owner named in its mark lives, or when a live postmaster serves its
    data dir (a detached server, or one whose owner died and whose watchdog was killed).
    """
    owner = _mark_owner(folder)
    if owner is not None:
        # A detached server's mark names the postmaster itself; any other server whose
        # marked owner is provably gone is an orphan, even if it still runs (its owner
        # and its watchdog were both killed): see :func:`retire_run_dir`.
        return alive_since(*owner)
    try:
        pid = int((folder / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return is_our_postmaster(pid, str(folder))


def remove_run_dir(run_dir: str, *, background: bool = False) -> bool:
    """Delete a run folder, but only one that dbtest marked as its own.

    Returns ``False`` (and touches nothing) for a folder without :data:`OWNED_MARK`.
    ``background`` renames it aside and lets a detached ``rm -rf`` delete it, so the
    owner does not wait on ~1,000 unlinks.
    """
    path = Path(run_dir)
    if not (path / OWNED_MARK).exists():
        return False
    if background:
        trash = path.with_name(path.name + ".trash")
        try:
            path.rename(trash)
            run_in_background(["rm", "-rf", str(trash)])
            return True
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
    return True


def orphans(registry: Path) -> list[tuple[Path, Registration | None]]:
    """Registry entries whose owner died (``None`` for an unreadable entry). Changes nothing."""
    found: list[tuple[Path, Registration | None]] = []
    if not registry.is_dir():
        return found
    for entry in sorted(registry.glob("*.json")):
        try:
            reg = Registration(**json.loads(entry.read_text()))
        except FileNotFoundError:
            continue  # its owner just stopped
        except (OSError, ValueError, TypeError):
            found.append((entry, None))
            continue
        if not alive_since(reg.owner_pid, reg.started):
            found.append((entry, reg))
    return found


def retire(entry: Path, reg: Registration, *, fast: bool = False) -> None:
    """Stop ``reg``'s server, delete its (marked) run folder and its registry ``entry``."""
    stop_postmaster(reg.postmaster_pid, reg.run_dir, fast=fast)
    remove_run_dir(reg.run_dir)
    entry.unlink(missing_ok=True)


def retire_run_dir(folder: Path) -> None:
    """Stop the postmaster still serving ``folder`` (a run folder no live process needs,
    see :func:`in_use`), then delete the folder (only one carrying dbtest's mark)."""
    pid = _postmaster_in(str(folder))
    if pid is not None:
        stop_postmaster(pid, str(folder), fast=False)
    remove_run_dir(str(folder))


def reap(registry: Path) -> list[str]:
    """Stop servers whose owner died and delete their run dirs. Returns what was reaped."""
    reaped = []
    for entry, reg in orphans(registry):
        if reg is None:
            entry.unlink(missing_ok=True)
            continue
        retire(entry, reg)
        reaped.append(reg.run_dir)
    return reaped


def run_in_background(args: Sequence[str]) -> None:
    """Start ``args`` on its own and return at once (~1 ms).

    A shell forks it and exits, so the process is init's child: nobody waits for it, no
    zombie and no "subprocess is still running" ResourceWarning stays behind, and a
    Ctrl-C to this process group does not stop it.
    """
    subprocess.run(["sh", "-c", '"$@" </dev/null >/dev/null 2>&1 &', "sh", *args],
                   start_new_session=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def spawn_detached(args: Sequence[str]) -> int:
    """Start ``args`` in a session of its own, not waited for; returns its pid (so the
    caller can hand it something, such as a run folder's mark, before it returns)."""
    proc = subprocess.Popen(args, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True, env={**os.environ, "PYTHONPATH": _PACKAGE_PARENT})
    proc.returncode = 0  # never waited for: init reaps it once this process exits
    return proc.pid


_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def start_watchdog(run_dir: Path, registry: Path) -> subprocess.Popen[bytes]:
    """Start the watchdog of the server about to be started in ``run_dir`` (registered in
    ``registry``).

    It is started *before* the server, so no moment exists in which a server runs
    unwatched: an owner killed at any point of a start leaves nothing running. Keep the
    returned process's ``stdin`` open; :func:`watch_server` tells it the postmaster's pid
    and registry entry once known, :func:`release_watchdog` lets it go. Closing ``stdin``
    otherwise (the owner died) makes it stop whatever postmaster serves ``run_dir`` and
    delete the folder and its registry entry.
    """
    return subprocess.Popen(
        [sys.executable, "-S", "-m", "dbtest.provision._lifetime", str(run_dir),
         str(registry)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # its own session: a Ctrl-C to the test run's process group must not kill it
        start_new_session=True, close_fds=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def watch_server(watchdog: subprocess.Popen[bytes], postmaster_pid: int, entry: Path) -> None:
    """Tell ``watchdog`` which postmaster it guards and which registry entry to delete."""
    with contextlib.suppress(OSError):
        assert watchdog.stdin is not None
        watchdog.stdin.write(f"pid {postmaster_pid} {entry}\n".encode())
        watchdog.stdin.flush()


def start_owner_watchdog(owner_pid: int, postmaster_pid: int, run_dir: str,
                         entry: Path) -> None:
    """Watch a server owned by another process (an xdist controller) by polling that
    process: when it is gone and the registry entry still exists, stop the server."""
    package_parent = str(Path(__file__).resolve().parents[2])
    run_in_background(["env", f"PYTHONPATH={package_parent}", sys.executable, "-S", "-m",
                       "dbtest.provision._lifetime", str(postmaster_pid), run_dir, str(entry),
                       identity(owner_pid)])  # pid and start time: a reused pid is not it


def _watch_owner(owner: str, pid: int, run_dir: str, entry: str) -> None:
    # Watch the server itself, not only its registry entry: the entry also disappears when
    # someone deletes the cache dir mid-run, and the server must still go with its owner.
    while identity_alive(owner) and is_our_postmaster(pid, run_dir):
        time.sleep(0.25)
    if identity_alive(owner):
        return  # the owner stopped it, or lives to see that it died
    # A server gone and its entry gone: the owner stopped it on purpose (and may still be
    # copying its folder into the cache in the background): leave the folder alone.
    if is_our_postmaster(pid, run_dir) or Path(entry).exists():
        stop_postmaster(pid, run_dir, fast=False)
        remove_run_dir(run_dir)
        Path(entry).unlink(missing_ok=True)


#: released watchdogs that may not have exited yet; waited for before this process exits
_RELEASED: list[subprocess.Popen[bytes]] = []


def release_watchdog(watchdog: subprocess.Popen[bytes]) -> None:
    """Tell ``watchdog`` its server was stopped (or detached) on purpose: it exits."""
    with contextlib.suppress(OSError):
        assert watchdog.stdin is not None
        watchdog.stdin.write(b"done")
        watchdog.stdin.close()
    # It exits within milliseconds; collecting it later keeps stop() from waiting on it,
    # and collecting it at all keeps Popen from warning that it is "still running".
    _RELEASED[:] = [p for p in _RELEASED if p.poll() is None]
    _RELEASED.append(watchdog)


@atexit.register
def _collect_released() -> None:
    for proc in _RELEASED:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)


def _watch(run_dir: str, registry: str) -> None:
    message = sys.stdin.buffer.read()  # returns at EOF: the owner closed it or died
    if b"done" in (line.strip() for line in message.split(b"\n")):
        return
    pid, entry = _told(message)
    if pid is None:
        # the owner died before it could say which server: find the one serving run_dir
        # (if it was spawned at all; a postmaster writes its pid file within milliseconds)
        deadline = time.monotonic() + 2.0
        while pid is None and time.monotonic() < deadline:
            pid = _postmaster_in(run_dir)
            if pid is None:
                time.sleep(0.05)
    if pid is not None:
        stop_postmaster(pid, run_dir, fast=False)
    remove_run_dir(run_dir)
    if entry is not None:
        Path(entry).unlink(missing_ok=True)
    for other in Path(registry).glob("*.json"):  # written before the owner could tell us
        with contextlib.suppress(OSError, ValueError):
            if json.loads(other.read_text()).get("run_dir") == run_dir:
                other.unlink(missing_ok=True)


def _told(message: bytes) -> tuple[int | None, str | None]:
    for line in message.decode(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "pid" and parts[1].isdigit():
            return int(parts[1]), parts[2]
    return None, None


def _postmaster_in(run_dir: str) -> int | None:
    """The live postmaster serving a data dir inside ``run_dir``, if any."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((Path(run_dir) / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        if is_our_postmaster(pid, run_dir):
            return pid
    inside = run_dir.rstrip("/").encode() + b"/"
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
                if b"-D" in cmdline and any(inside in arg for arg in cmdline) \
                        and pid_alive(int(name)):
                    return int(name)
    return None


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(sys.argv) > 4:
        _watch_owner(sys.argv[4], int(sys.argv[1]), sys.argv[2], sys.argv[3])
    else:
        _watch(sys.argv[1], sys.argv[2])
