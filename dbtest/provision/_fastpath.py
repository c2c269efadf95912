"""The parts of a local start that sit on the caller's path, kept short (issue 16).

Each helper here replaces a step that cost a warm start 3-60 ms (measured with a
timer around each step of ``LocalCluster.start``): walking the copied cluster to
``chown`` it, a ``fork`` that copies the test process's page tables, the watchdog's
``fork``/``exec`` before the server could start, and a test connection of its own.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from dbtest.provision import _lifetime as lifetime
from dbtest.provision._runas import Account, chown_tree

__all__ = ["WatchdogStart", "as_account", "give_run_dir", "known_version"]


def give_run_dir(run_dir: Path, data: Path, sockets: Path, account: Account) -> None:
    """Give a new run folder to the server account (when it is another one).

    ``data`` came from a cached generation (or a spare copy of one) that the account
    owns throughout: ``initdb`` ran as it, the server wrote the rest, and ``cp -a`` keeps
    owners. Walking its ~1,000 files again cost 5-25 ms of every start, so the tree is
    walked only when its top says otherwise (a cache restored or made under another uid).
    """
    if not account.switched:
        return
    mine = (account.uid, account.gid)
    for path in (run_dir, sockets):
        os.chown(path, *mine)
    try:
        owners = {(st.st_uid, st.st_gid) for st in (
            data.lstat(), (data / "global" / "pg_control").lstat(),
            (data / "PG_VERSION").lstat())}
    except OSError:
        owners = set()
    if owners != {mine}:
        chown_tree(data, account)


def as_account(args: list[str], account: Account) -> tuple[list[str], dict[str, Any]]:
    """``args`` and the Popen options that run them as ``account``.

    Python's ``user=``/``group=`` rule out ``vfork``: the ``fork`` then copies the page
    tables of the whole test process (5 ms for a bare interpreter, ~60 ms for a 200 MB
    pytest process, on the start's path). ``setpriv`` (util-linux) switches the account
    after a ``vfork`` and ``exec`` instead, and then execs ``args``: the pid is theirs.
    """
    if not account.switched:
        return args, {}
    setpriv = _setpriv()
    if setpriv is None:
        return args, {"user": account.uid, "group": account.gid, "extra_groups": []}
    return [setpriv, f"--reuid={account.uid}", f"--regid={account.gid}", "--clear-groups",
            "--", *args], {}


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


class WatchdogStart:
    """The server's watchdog, started in a thread so that its ``fork``/``exec`` overlaps
    the copy of the cluster into the run folder; :meth:`join` (before the server is
    spawned) waits for it, so a server never runs unwatched."""

    def __init__(self, run_dir: Path, registry: Path) -> None:
        self._out: list[subprocess.Popen[bytes] | BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(run_dir, registry),
                                        name="dbtest-watchdog")
        self._thread.start()

    def _run(self, run_dir: Path, registry: Path) -> None:
        try:
            self._out.append(lifetime.start_watchdog(run_dir, registry))
        except BaseException as exc:  # handed to the starting thread by join()
            self._out.append(exc)

    def join(self) -> subprocess.Popen[bytes] | None:
        """The watchdog once started; ``None`` when it could not be (see :meth:`error`)."""
        self._thread.join()
        got = self._out[0] if self._out else None
        return got if isinstance(got, subprocess.Popen) else None

    def error(self) -> str:
        """Why the watchdog did not start."""
        return repr(self._out[0]) if self._out else "its thread ended without a result"


def known_version(version: str, pidfile: Path, pid: int) -> tuple[str, int] | None:
    """The server's version without a test connection, once ``pidfile`` (the postmaster's,
    which says "ready") names ``pid``: the binaries' probed ``version`` ("15.18").

    A test connection cost every start a backend fork; the caller's first query proves
    the socket anyway. ``None`` (connect to ask) for a version of another form.
    """
    match = re.fullmatch(r"(\d{2,})\.(\d+)", version)
    if match is None:
        return None
    try:
        if int(pidfile.read_text().split("\n", 1)[0]) != pid:
            return None
    except (OSError, ValueError):
        return None
    return match.group(0), int(match.group(1)) * 10000 + int(match.group(2))
