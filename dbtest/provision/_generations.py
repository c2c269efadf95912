"""Generations of a cached cluster: which one a run starts from, and which may go.

A cached cluster (``<cache>/clusters/pg<N>-<key>/``) holds *generations*
(``gen-<time_ns>``): the first is ``initdb``'s, each later one a stopped run's data with
the templates it built. ``current`` points at the newest. Each generation may carry a
``gen-<n>.json`` naming the *project* (project root + schema settings) whose run made
it, so a run picks the newest generation of its own project: two projects with
different schemas that run at the same time both keep their templates.

A process copying a generation holds a shared ``flock`` on ``gen-<n>.lock``; pruning
takes it exclusively without waiting, so a generation in use is never deleted. The
kernel drops the lock of a process that dies, so a crash blocks nothing.

What is kept (see :func:`prune`): ``current``, the two newest, each project's newest
(used within :data:`PROJECT_KEEP_DAYS`; the :data:`PROJECTS_KEPT` most recently
used projects), and any in use; then, over ``cache_max_mb``,
the oldest of the rest go first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dbtest.provision import _lifetime as lifetime

__all__ = ["GENERATIONS_KEPT", "PROJECTS_KEPT", "PROJECT_KEEP_DAYS", "Generation", "GenerationLock",
           "generations", "lock_shared", "pick", "project_of", "prune", "startable",
           "write_meta"]

#: the newest generations always kept (besides ``current``, each project's newest and
#: any in use)
GENERATIONS_KEPT = 2
#: a project's newest generation is kept this long after its last use
PROJECT_KEEP_DAYS = 7.0
#: ... and only for this many most recently used projects
PROJECTS_KEPT = 3
#: a half-written generation without a writer pid (older dbtest) is stale after this
LEGACY_PARTIAL_GRACE_S = 600.0
#: a start waits up to this long for a newer generation of its own project that a live
#: process is still writing (the previous run's background persist): starting from an
#: older one would build every template again
PENDING_WAIT_S = 30.0
# gen-<ns>, gen-<ns>.partial (older dbtest), gen-<ns>.partial-<writer identity>
_NAME = re.compile(r"gen-(\d+)(?:\.partial(?:-(\d+-\d+))?)?")
# what a prune renamed aside before deleting it: gen-<ns>.trash-<identity>
_TRASH = re.compile(r"gen-\d+\.trash-(\d+-\d+)")


@dataclass(frozen=True)
class Generation:
    """One generation folder of a cached cluster."""

    path: Path
    made_ns: int
    complete: bool
    #: identity of the process writing a partial one (``None``: complete, or older dbtest)
    writer: str | None = None

    @property
    def meta(self) -> Path:
        return self.path.with_name(self.path.name + ".json")

    @property
    def lock(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")


def generations(cluster_dir: Path) -> list[Generation]:
    """Every generation folder, oldest first."""
    found = []
    with contextlib.suppress(OSError):
        for path in cluster_dir.iterdir():
            match = _NAME.fullmatch(path.name)
            if match and path.is_dir():
                partial = path.name != f"gen-{match.group(1)}"
                writer = match.group(2)
                found.append(Generation(path, int(match.group(1)), not partial, writer))
    return sorted(found, key=lambda g: (g.made_ns, g.path.name))


def project_of(gen: Path) -> str | None:
    """The project whose run made ``gen`` (``None``: initdb's, or unknown)."""
    try:
        return str(json.loads(gen.with_name(gen.name + ".json").read_text())["project"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_meta(gen: Path, project: str | None) -> None:
    """Record the project of ``gen`` (written before ``gen`` appears under its name)."""
    if project:
        gen.with_name(gen.name + ".json").write_text(json.dumps({"project": project}))


class GenerationLock:
    """A shared lock on one generation: held while it is copied."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def lock_shared(gen: Path) -> GenerationLock | None:
    """Lock ``gen`` against pruning; ``None`` when it is gone (pruned meanwhile)."""
    lock = gen.with_name(gen.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        # a read-only cache: nobody can prune there either; use it unlocked
        return GenerationLock(gen, -1) if (gen / "PG_VERSION").is_file() else None
    fcntl.flock(fd, fcntl.LOCK_SH)
    if not (gen / "PG_VERSION").is_file():  # pruned between the pick and the lock
        os.close(fd)
        return None
    return GenerationLock(gen, fd)


def _current(cluster_dir: Path) -> str | None:
    try:
        return os.readlink(cluster_dir / "current")
    except OSError:
        return None


def _writing(cluster_dir: Path, project: str) -> bool:
    """Whether a live process writes a generation of ``project`` newer than its newest
    complete one (its meta is written before the copy starts: see :func:`store`)."""
    newest = 0
    pending = []
    for gen in generations(cluster_dir):
        if project_of(cluster_dir / f"gen-{gen.made_ns}") != project:
            continue
        if gen.complete:
            newest = gen.made_ns
        elif gen.writer is not None:
            pending.append(gen)
    return any(g.made_ns > newest and lifetime.identity_alive(g.writer or "") for g in pending)


def pick(cluster_dir: Path, project: str | None,
         wait: float = PENDING_WAIT_S) -> tuple[Path, GenerationLock] | None:
    """The generation a run of ``project`` starts from, locked: the newest one that
    ``project`` made, else ``current``. ``None`` when there is none yet. A newer one of
    ``project`` still being written is waited for (up to ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while project and time.monotonic() < deadline and _writing(cluster_dir, project):
        time.sleep(0.01)
    for _ in range(5):  # each miss means a prune or a new generation just happened
        complete = [g.path for g in generations(cluster_dir) if g.complete]
        candidates = [p for p in reversed(complete) if project and project_of(p) == project][:1]
        current = _current(cluster_dir)
        if current is not None:
            candidates.append(cluster_dir / current)
        if not candidates:
            return None
        for gen in candidates:
            held = lock_shared(gen)
            if held is not None:
                with contextlib.suppress(OSError):
                    os.utime(gen.with_name(gen.name + ".json"))  # "last used", for prune
                return gen, held
    return None


def startable(cluster_dir: Path) -> set[str]:
    """Names of the generations a start may pick: ``current`` and each project's newest."""
    names: set[str] = set()
    newest: dict[str, str] = {}
    for gen in generations(cluster_dir):
        if gen.complete:
            project = project_of(gen.path)
            if project:
                newest[project] = gen.path.name
    names.update(newest.values())
    current = _current(cluster_dir)
    if current is not None:
        names.add(current)
    return names


def _try_exclusive(gen: Generation, create: bool = True) -> int | None:
    """An exclusive lock on ``gen`` if nobody copies it, else ``None``. Without
    ``create`` (a dry run changes nothing) a missing lock file means "free": -1."""
    try:
        fd = os.open(gen.lock, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return None if create else -1
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _size(gen: Generation) -> int:
    memo = gen.path.with_name(gen.path.name + ".size")
    with contextlib.suppress(OSError, ValueError):
        return int(memo.read_text())
    total = 0
    for folder, _dirs, files in os.walk(gen.path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _keep_reasons(cluster_dir: Path, gens: list[Generation]) -> dict[Path, str]:
    current = _current(cluster_dir)
    complete = [g for g in gens if g.complete]
    keep: dict[Path, str] = {}
    for gen in complete[-GENERATIONS_KEPT:]:
        keep[gen.path] = "one of the two newest"
    newest_of: dict[str, Generation] = {}
    for gen in complete:
        project = project_of(gen.path)
        if project:
            newest_of[project] = gen
    horizon = time.time() - PROJECT_KEEP_DAYS * 86400
    used: list[tuple[float, Path]] = []
    for gen in newest_of.values():
        with contextlib.suppress(OSError):
            last = gen.meta.stat().st_mtime  # touched by each pick
            if last > horizon:
                used.append((last, gen.path))
    # a test suite that makes throwaway projects (pytester) must not pile them up
    for _, path in sorted(used)[-PROJECTS_KEPT:]:
        keep.setdefault(path, "a project's newest")
    if current is not None:
        keep[cluster_dir / current] = "current"
    return keep


def prune(cluster_dirs: list[Path], max_mb: int | None = None, *,
          dry_run: bool = False) -> list[tuple[Path, int, str]]:
    """Delete generations nobody needs; returns ``(path, bytes, why)`` of each.

    Half-written ones go when their writer is gone. Complete ones go unless kept (see
    the module docs); over ``max_mb`` (all clusters of the cache together) the oldest
    unkept-but-not-current ones go too, except one in use.
    """
    removed: list[tuple[Path, int, str]] = []
    candidates: list[tuple[Generation, str]] = []
    total = 0
    kept_sizes: list[tuple[Generation, int]] = []
    for cluster_dir in cluster_dirs:
        gens = generations(cluster_dir)
        keep = _keep_reasons(cluster_dir, gens)
        for gen in gens:
            if not gen.complete:
                if gen.writer is not None:
                    dead = not lifetime.identity_alive(gen.writer)
                else:
                    dead = time.time_ns() - gen.made_ns > LEGACY_PARTIAL_GRACE_S * 1e9
                if dead:
                    candidates.append((gen, "half-written by a process that is gone"))
                continue
            size = _size(gen)
            if gen.path in keep:
                total += size
                if keep[gen.path] != "current":
                    kept_sizes.append((gen, size))
                continue
            candidates.append((gen, "older generation, replaced"))
    for cluster_dir in cluster_dirs:
        for trash in _dead_trash(cluster_dir):
            if not dry_run:
                shutil.rmtree(trash, ignore_errors=True)
            removed.append((trash, 0, "half-deleted by a process that is gone"))
    for gen, why in candidates:
        size = _size(gen)
        if _remove(gen, dry_run):
            removed.append((gen.path, size, why))
    if max_mb is not None:
        limit = max_mb * 2**20
        for gen, size in sorted(kept_sizes, key=lambda pair: pair[0].made_ns):
            if total <= limit:
                break
            if _remove(gen, dry_run):
                removed.append((gen.path, size, f"over cache_max_mb = {max_mb}"))
                total -= size
    return removed


def _dead_trash(cluster_dir: Path) -> list[Path]:
    found = []
    with contextlib.suppress(OSError):
        for path in cluster_dir.iterdir():
            match = _TRASH.fullmatch(path.name)
            if match and not lifetime.identity_alive(match.group(1)):
                found.append(path)
    return sorted(found)


def _remove(gen: Generation, dry_run: bool) -> bool:
    """Delete ``gen`` unless someone copies it right now."""
    fd = _try_exclusive(gen, create=not dry_run)
    if fd is None:
        return False  # in use: kept
    if fd < 0:
        return True  # a dry run, and no lock file: nobody copies it
    try:
        if dry_run:
            return True
        if gen.complete:
            # renamed first: a reader that picked it sees it gone, never half-deleted
            trash = gen.path.with_name(f"{gen.path.name}.trash-{lifetime.identity()}")
            try:
                gen.path.rename(trash)
            except OSError:
                return False
        else:
            trash = gen.path
        shutil.rmtree(trash, ignore_errors=True)
        for suffix in (".size", ".json"):
            gen.path.with_name(gen.path.name + suffix).unlink(missing_ok=True)
        # a half-written one's meta is under its final name (see store)
        gen.path.with_name(f"gen-{gen.made_ns}.json").unlink(missing_ok=True)
        gen.lock.unlink(missing_ok=True)
        return not trash.exists()
    finally:
        os.close(fd)


def point_current(cluster_dir: Path, name: str) -> None:
    """Make ``current`` name ``name`` (atomic: readers see the old or the new one)."""
    tmp = cluster_dir / f"current.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(name, tmp)
    tmp.replace(cluster_dir / "current")


def store(data: Path, cluster_dir: Path, project: str | None) -> Path:
    """Copy a stopped cluster's ``data`` into the cache as the newest generation."""
    import subprocess

    from dbtest.errors import ProvisionError

    name = f"gen-{time.time_ns()}"
    partial = cluster_dir / f"{name}.partial-{lifetime.identity()}"
    write_meta(cluster_dir / name, project)  # first: a start then waits for this copy
    proc = subprocess.run(["cp", "-a", str(data), str(partial)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        (cluster_dir / f"{name}.json").unlink(missing_ok=True)
        raise ProvisionError(f"copying {data} into the cache ({partial}) failed: "
                             f"{proc.stderr.strip()}. Free some space there, or set cache_dir "
                             f"to another folder.")
    (partial / "postmaster.pid").unlink(missing_ok=True)
    partial.rename(cluster_dir / name)
    point_current(cluster_dir, name)
    return cluster_dir / name


def cluster_dirs_of(cluster_dir: Path) -> list[Path]:
    """Every cached cluster beside ``cluster_dir`` (the cache's ``clusters/`` folder)."""
    with contextlib.suppress(OSError):
        return sorted(p for p in cluster_dir.parent.iterdir()
                      if p.is_dir() and p.name.startswith("pg"))
    return [cluster_dir]


def _persist_job(data: Path, cluster_dir: Path, run_dir: Path, project: str,
                 max_mb: str) -> int:
    """The background half of ``LocalCluster.persist(background=True)``."""
    try:
        store(data, cluster_dir, project or None)
    except Exception:
        return 1
    finally:
        lifetime.remove_run_dir(str(run_dir))
    prune(cluster_dirs_of(cluster_dir), int(max_mb) if max_mb else None)
    return 0


if __name__ == "__main__":
    import sys

    data_, cluster_, run_, project_, max_mb_ = sys.argv[1:6]
    sys.exit(_persist_job(Path(data_), Path(cluster_), Path(run_), project_, max_mb_))
