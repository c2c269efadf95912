"""Small file, port and process-file helpers of :mod:`dbtest.provision._local`."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from dbtest.errors import ProvisionError
from dbtest.provision._runas import Account

__all__ = ["check_port_free", "copy_tree", "free_port", "make_dir", "pidfile_ready", "reachable",
           "shut_down_cleanly", "tree_size"]


def shut_down_cleanly(data: Path) -> bool:
    """Whether ``data``'s ``pg_control`` says "shut down" (not "in production": a crash).

    ``ControlFileData`` starts with the system identifier (8 bytes), two 4-byte version
    numbers, then the cluster state, ``DB_SHUTDOWNED`` = 1 (the layout of every supported
    release).
    """
    try:
        with (data / "global" / "pg_control").open("rb") as fh:
            head = fh.read(20)
    except OSError:
        return False
    return len(head) == 20 and int.from_bytes(head[16:20], sys.byteorder) == 1


def pidfile_ready(pidfile: Path) -> bool:
    """Whether ``postmaster.pid`` says the server accepts connections (its last line)."""
    try:
        return pidfile.read_text().rstrip().endswith("ready")
    except OSError:
        return False


def make_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) unless it exists; ProvisionError if not writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot create {path}: {exc.strerror}. Set cache_dir "
                             f"(DBTEST_CACHE_DIR) to a writable folder.") from None
    if not os.access(path, os.W_OK):
        raise ProvisionError(f"{path} is not writable. Set cache_dir (DBTEST_CACHE_DIR) to a "
                             f"writable folder.")
    return path


def reachable(path: Path, account: Account) -> bool:
    """Whether ``account`` may enter ``path`` (search permission on it and every parent)."""
    if not account.switched:
        return True
    for folder in (path, *path.parents):
        try:
            st = folder.stat()
        except OSError:
            return False
        if st.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def check_port_free(port: int) -> None:
    """ProvisionError naming the fix when ``port`` on 127.0.0.1 cannot be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as postgres does: a connection left in TIME_WAIT does not block the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except PermissionError:
            raise ProvisionError(f"port {port} on 127.0.0.1 needs privileges this process "
                                 f"lacks. Fix: use a port above 1023 (--port, DBTEST_PORT or "
                                 f"port=...), or port=0 for a free one.") from None
        except OSError as exc:
            raise ProvisionError(
                f"port {port} on 127.0.0.1 is already in use ({exc.strerror}): another server "
                f"listens there. Fix: pick another port (--port, DBTEST_PORT or port=...), use "
                f"port=0 for a free one, or stop what listens on {port} "
                f"(ss -ltnp 'sport = :{port}' names it).") from None


def copy_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` with owners and modes (``cp -a``); ProvisionError if it fails."""
    # cp -a keeps owners and modes (the cluster belongs to the server account) and is
    # much faster than shutil.copytree on ~1,000 small files.
    proc = subprocess.run(["cp", "-a", str(src), str(dst)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise ProvisionError(f"copying {src} to {dst} failed: {proc.stderr.strip()}. Check free "
                             f"space and permissions, or set cache_dir.")


def tree_size(path: Path) -> int:
    """Bytes in the files under ``path`` (a cached generation), remembered beside it."""
    # remembered beside the generation: walking ~1,000 files costs ~10 ms per start
    memo = path.with_name(path.name + ".size")
    with contextlib.suppress(OSError, ValueError):
        return int(memo.read_text())
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    with contextlib.suppress(OSError):
        memo.write_text(str(size))
    return size


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
