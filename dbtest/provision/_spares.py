"""Run folders and spare cluster copies, namespaced by cache dir and claimed atomically.

Everything a run puts in tmpfs or the temp dir lives in ``<base>/dbtest-u<uid>-<key>/``,
where ``key`` is a hash of the cache dir (the folder records the cache dir's path in
``cache_dir``): run folders (``dbtest-xxxxxxxx``) and ``spares/<cluster>/``.

A *spare* is a copy of a cached generation made in the background after a start, so
the next start renames it into place instead of copying ~1,000 files. Its life:

- made as ``<gen>.<maker identity>.partial`` by a background process that holds a shared
  lock on the generation, then renamed to ``<gen>.<maker identity>.ready``;
- taken by renaming it into a run folder: of two processes, one wins, and the other
  copies from the cache instead;
- removed only after claiming it by the same kind of rename (to ``*.trash-<identity>``),
  so a spare is never deleted while another process renames it into its data dir; and
  only when it is of no use (its generation is no longer the one to start from) or
  its maker is provably gone (pid and process start time).

Nothing here is removed because of its age.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dbtest.errors import ProvisionError
from dbtest.provision import _lifetime as lifetime

__all__ = ["NAMESPACE_PREFIX", "namespace", "namespace_dir", "namespaces", "prepare", "sweep",
           "sweep_vanished", "take"]

NAMESPACE_PREFIX = "dbtest-u"
_SPARE = re.compile(r"(gen-\d+)\.(\d+-\d+)\.(partial|ready)")
_TRASH = re.compile(r".+\.trash-(\d+-\d+)")
_NAMESPACE = re.compile(r"dbtest-u(\d+)-([0-9a-f]{12})")


def namespace(cache_dir: Path) -> str:
    """The folder name of ``cache_dir``'s things in a run base."""
    key = hashlib.sha256(str(cache_dir.resolve()).encode()).hexdigest()[:12]
    return f"{NAMESPACE_PREFIX}{os.geteuid()}-{key}"


def namespace_dir(base: Path, cache_dir: Path) -> Path:
    """``cache_dir``'s folder in ``base``, created (mode 755: the server account, when
    dbtest runs as root, must pass through it) and checked to be this user's."""
    folder = base / namespace(cache_dir)
    try:
        folder.mkdir(mode=0o755, exist_ok=True)
        st = folder.lstat()
        if not folder.is_dir() or folder.is_symlink() or st.st_uid != os.geteuid():
            raise ProvisionError(f"{folder} is not a folder of this user (uid {os.geteuid()}); "
                                 f"someone else made it. Remove it, or set cache_dir to "
                                 f"another folder.")
        record = folder / "cache_dir"
        if not record.exists():
            tmp = folder / f"cache_dir.{os.getpid()}"
            tmp.write_text(str(cache_dir.resolve()))
            tmp.replace(record)
    except OSError as exc:
        raise ProvisionError(f"cannot create {folder}: {exc.strerror}. Free some space there, "
                             f"or set cache_dir to a writable folder.") from None
    return folder


def _spare_folder(ns: Path, cluster: str) -> Path:
    return ns / "spares" / cluster


def take(ns: Path, cluster: str, gen: Path, data: Path) -> bool:
    """Rename a ready spare of ``gen`` to ``data``; ``False`` when there is none (or it
    turned out incomplete, which is then deleted: ``data`` does not exist after)."""
    folder = _spare_folder(ns, cluster)
    try:
        ready = sorted(folder.glob(f"{gen.name}.*.ready"))
    except OSError:
        return False
    for spare in ready:
        try:
            spare.rename(data)  # atomic: of two takers, one wins
        except OSError:
            continue
        if (data / "PG_VERSION").is_file() and (data / "global" / "pg_control").is_file():
            return True
        shutil.rmtree(data, ignore_errors=True)  # damaged from outside: ours to delete
    return False


def _claim_and_delete(path: Path) -> bool:
    trash = path.with_name(f"{path.name}.trash-{lifetime.identity()}")
    try:
        path.rename(trash)
    except OSError:
        return False  # taken (or claimed) by another process first
    shutil.rmtree(trash, ignore_errors=True)
    return True


def sweep(ns: Path, *, dry_run: bool = False) -> list[tuple[Path, str]]:
    """Remove the spares in ``ns`` that no start can use; returns ``(path, why)``.

    Useless are: ready spares of generations that no start of the cache dir recorded
    in ``ns`` would pick (gone, or neither ``current`` nor a project's newest), and
    half-made (or half-deleted) ones whose process is gone.
    """
    from dbtest.provision._generations import startable

    removed: list[tuple[Path, str]] = []
    try:
        cache_dir = Path((ns / "cache_dir").read_text().strip())
    except OSError:
        cache_dir = None
    root = ns / "spares"
    try:
        clusters = [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return removed
    for folder in clusters:
        wanted = startable(cache_dir / "clusters" / folder.name) if cache_dir else set()
        for entry in sorted(folder.iterdir()):
            why = _useless(entry, wanted)
            if why and (dry_run or _delete(entry)):
                removed.append((entry, why))
    return removed


def _useless(entry: Path, wanted: set[str]) -> str | None:
    trash = _TRASH.fullmatch(entry.name)
    if trash:
        return None if lifetime.identity_alive(trash.group(1)) else \
            "half-deleted by a process that is gone"
    match = _SPARE.fullmatch(entry.name)
    if not match:
        return None
    gen, maker, state = match.groups()
    if state == "partial":
        return None if lifetime.identity_alive(maker) else \
            "half-made by a process that is gone"
    if gen not in wanted:
        return "spare of a generation no start picks any more"
    return None


def _delete(entry: Path) -> bool:
    if _TRASH.fullmatch(entry.name):
        shutil.rmtree(entry, ignore_errors=True)
        return True
    return _claim_and_delete(entry)


def prepare(ns: Path, cluster: str, gen: Path) -> None:
    """After a start from ``gen``: drop useless spares, and begin a new one in the
    background unless one is ready or being made."""
    folder = _spare_folder(ns, cluster)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sweep(ns)
        for entry in folder.glob(f"{gen.name}.*"):
            match = _SPARE.fullmatch(entry.name)
            if match and (match.group(3) == "ready" or lifetime.identity_alive(match.group(2))):
                return
    except OSError:
        return
    package_parent = str(Path(__file__).resolve().parents[2])
    lifetime.run_in_background(["env", f"PYTHONPATH={package_parent}", sys.executable, "-S",
                                "-m", "dbtest.provision._spares", str(gen), str(folder)])


def sweep_vanished(base: Path) -> list[Path]:
    """Remove this user's namespace folders in ``base`` whose cache dir no longer exists
    (spares first, then the folder once no run folder is left in it)."""
    gone = []
    for ns in namespaces(base):
        try:
            recorded = Path((ns / "cache_dir").read_text().strip())
        except OSError:
            continue  # being created right now
        if recorded.exists():
            continue
        sweep(ns)
        if any(ns.glob("dbtest-*")):
            continue  # a run folder: its owner (or its watchdog) removes it
        with contextlib.suppress(OSError):
            for folder in sorted(ns.glob("spares/*")):
                folder.rmdir()  # only when empty: a spare made meanwhile stays
            (ns / "spares").rmdir()
            if not recorded.exists():
                (ns / "cache_dir").unlink()
                ns.rmdir()
                gone.append(ns)
    return gone


def _make(gen: Path, folder: Path) -> int:
    """The background job: copy ``gen`` to ``folder`` as a ready spare, then sweep the
    folders of vanished cache dirs (off the start's path)."""
    with contextlib.suppress(OSError):
        os.nice(10)  # it starts as the test run does: on 2 cores the run comes first
    try:
        return _copy_spare(gen, folder)
    finally:
        # last: it took seconds on a busy machine, and done first it let the lock below
        # be taken after the test run had ended, while its caller deleted the cache dir
        with contextlib.suppress(OSError):
            sweep_vanished(folder.parent.parent.parent)


def _copy_spare(gen: Path, folder: Path) -> int:
    from dbtest.provision._generations import lock_shared

    held = lock_shared(gen)
    if held is None:
        return 1  # pruned meanwhile: nothing to copy
    stem = folder / f"{gen.name}.{lifetime.identity()}"
    partial = stem.with_name(stem.name + ".partial")
    try:
        proc = subprocess.run(["cp", "-a", str(gen), str(partial)], check=False,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            return 1
        partial.rename(stem.with_name(stem.name + ".ready"))
    finally:
        held.release()
    return 0


def namespaces(base: Path) -> list[Path]:
    """This user's namespace folders in ``base``."""
    found = []
    with contextlib.suppress(OSError):
        for folder in sorted(base.glob(f"{NAMESPACE_PREFIX}{os.geteuid()}-*")):
            if _NAMESPACE.fullmatch(folder.name) and folder.is_dir():
                found.append(folder)
    return found


if __name__ == "__main__":
    sys.exit(_make(Path(sys.argv[1]), Path(sys.argv[2])))
