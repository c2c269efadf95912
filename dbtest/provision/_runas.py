"""Which OS account runs the server: PostgreSQL refuses to run as root.

As root (CI containers), dbtest runs ``initdb`` and ``postgres`` as an unprivileged
account: ``DBTEST_RUN_AS`` if set, else an existing ``postgres`` account, else a
dedicated ``dbtest`` system user that it creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dbtest.errors import ProvisionError

__all__ = ["DEDICATED", "Account", "chown_tree", "planned_account", "server_account"]

DEDICATED = "dbtest"


@dataclass(frozen=True)
class Account:
    """The account the server processes run as."""

    name: str
    uid: int
    gid: int
    #: True when dbtest runs as root and switches to this account for the server
    switched: bool
    how: str  # "current user", "existing account", "created by dbtest"


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@cache
def server_account() -> Account:
    """The account to run servers as (cached for the process).

    As root with neither ``DBTEST_RUN_AS`` nor a ``postgres`` or ``dbtest`` account,
    this creates the ``dbtest`` system account.
    """
    return planned_account() or _create_dedicated()


def planned_account() -> Account | None:
    """The account :func:`server_account` would pick, without creating one.

    ``None`` means dbtest runs as root and would create the :data:`DEDICATED` account
    on the first start. ``dbtest doctor`` shows this; it must change nothing.
    """
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return Account(me.pw_name, me.pw_uid, me.pw_gid, False, "current user")
    wanted = os.environ.get("DBTEST_RUN_AS")
    if wanted:
        entry = _lookup(wanted)
        if entry is None or entry.pw_uid == 0:
            raise ProvisionError(f"DBTEST_RUN_AS={wanted!r} is not an unprivileged account on "
                                 f"this machine. Create it (useradd --system {wanted}) or unset "
                                 f"DBTEST_RUN_AS.")
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, True, "DBTEST_RUN_AS")
    for name in ("postgres", DEDICATED):
        entry = _lookup(name)
        if entry is not None and entry.pw_uid != 0:
            return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, True, "existing account")
    return None


def _create_dedicated() -> Account:
    tool = shutil.which("useradd") or shutil.which("adduser")
    if tool is None:
        raise ProvisionError(
            "running as root, PostgreSQL needs an unprivileged account, and there is no "
            "'postgres' account nor useradd/adduser to create one. Create one (e.g. "
            "'useradd --system dbtest') and set DBTEST_RUN_AS, or run as a normal user.")
    if Path(tool).name == "useradd":
        cmd = [tool, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", DEDICATED]
    else:  # busybox / Alpine adduser
        cmd = [tool, "-S", "-D", "-H", DEDICATED]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    entry = _lookup(DEDICATED)
    if entry is None:
        raise ProvisionError(f"running as root, dbtest tried to create the unprivileged "
                             f"account {DEDICATED!r} with {' '.join(cmd)} and failed: "
                             f"{proc.stderr.strip()}. Create an account and set DBTEST_RUN_AS.")
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, True, "created by dbtest")


def chown_tree(path: Path, account: Account) -> None:
    """Give ``path`` and everything below it to ``account`` (no-op when not switched)."""
    if not account.switched:
        return
    os.chown(path, account.uid, account.gid)
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), account.uid, account.gid)
