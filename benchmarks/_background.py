"""What dbtest leaves running after a start returns, for one cache dir: spare copies.

A warm start (one that did not run ``initdb``) begins a background copy of its
generation, the *spare* the next start renames into place. It lives in the cache dir's
own folder of each run base (``<base>/dbtest-u<uid>-<key>/spares/<cluster>/``, see
``dbtest.provision._spares``) as ``<gen>.<maker>.partial``, then ``<gen>.<maker>.ready``.
A benchmark waits for it where that work belongs in a figure, and before it deletes the
cache dir (the maker locks the generation it copies, inside the cache dir).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path


def spare_folders(cache_dir: Path) -> list[Path]:
    """``cache_dir``'s spare folders, one per run base that has one."""
    from dbtest.provision._local import run_bases
    from dbtest.provision._spares import namespace

    name = namespace(cache_dir)
    return [base / name / "spares" for base in run_bases(cache_dir)
            if (base / name / "spares").is_dir()]


def _entries(cache_dir: Path, folders: list[Path] | None = None) -> list[Path]:
    out: list[Path] = []
    for folder in spare_folders(cache_dir) if folders is None else folders:
        with contextlib.suppress(OSError):
            out += [p for p in folder.glob("*/*") if p.name.endswith((".partial", ".ready"))]
    return out


def spares_settled(cache_dir: Path, *, ready: bool, folders: list[Path] | None = None) -> bool:
    """No spare of ``cache_dir`` is being made; with ``ready``, one is ready. ``folders``:
    the spare folders to look in (default: those of the usual run bases)."""
    entries = _entries(cache_dir, folders)
    if any(p.name.endswith(".partial") for p in entries):
        return False
    return not ready or any(p.name.endswith(".ready") for p in entries)


def wait_spare(cache_dir: Path, timeout: float = 60.0) -> bool:
    """Wait until the spare copy a warm start of ``cache_dir`` began is ready; ``False``
    after ``timeout``. The maker may take a moment to appear: it is started in the
    background, so "nothing there yet" is waited out too."""
    deadline = time.monotonic() + timeout
    while not spares_settled(cache_dir, ready=True):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def drop_own_spares(cache_dir: Path, timeout: float = 60.0) -> None:
    """Delete the spares of ``cache_dir`` (never another cache dir's), once none is being
    made, and then its empty folders. Call it before deleting ``cache_dir``."""
    deadline = time.monotonic() + timeout
    while not spares_settled(cache_dir, ready=False) and time.monotonic() < deadline:
        time.sleep(0.01)  # a copy still runs: let it finish (it holds the cache's lock)
    for spare in _entries(cache_dir):
        trash = spare.with_name(spare.name + ".bench-trash")
        with contextlib.suppress(OSError):
            spare.rename(trash)  # as dbtest does: a spare being taken is never deleted
            shutil.rmtree(trash)
    for folder in spare_folders(cache_dir):
        with contextlib.suppress(OSError):
            for cluster in folder.iterdir():
                cluster.rmdir()  # only when empty
            folder.rmdir()


def drop_namespace(cache_dir: Path) -> None:
    """After ``cache_dir`` was deleted: remove its (empty) folder in each run base, which
    dbtest would otherwise sweep at some later start. A run folder still being deleted in
    the background keeps it."""
    from dbtest.provision._local import run_bases
    from dbtest.provision._spares import namespace

    if cache_dir.exists():
        return
    for base in run_bases(cache_dir):
        folder = base / namespace(cache_dir)
        with contextlib.suppress(OSError):
            for cluster in (folder / "spares").iterdir():
                cluster.rmdir()  # only when empty
        with contextlib.suppress(OSError):
            (folder / "spares").rmdir()
        with contextlib.suppress(OSError):
            if [p.name for p in folder.iterdir()] == ["cache_dir"]:
                (folder / "cache_dir").unlink()
                folder.rmdir()
