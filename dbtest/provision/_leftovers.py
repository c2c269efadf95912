"""The cache's layout, and what ``dbtest clean`` may remove from it.

Names of everything :class:`~dbtest.provision._local.LocalCluster` creates (cached
cluster generations, spare copies, run folders), and finders for the ones no live
process uses. Nothing without these names and dbtest's mark is ever listed.

The finders take ``bases``, the folders run folders may be in: the cluster decides them
(:func:`dbtest.provision._local.run_bases`), so this module does not import it back.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import time
from pathlib import Path

from dbtest.provision import _lifetime as lifetime
from dbtest.provision import _spares as spares

__all__ = ["GENERATION_GRACE_S", "RUN_DIR_NAME", "SPARES_PREFIX", "cluster_dirs", "orphan_run_dirs",
           "remove_generation", "spare_dirs", "stale_generations", "trash_dirs"]

#: a generation replaced (or a half-written one begun) less than this long ago may still
#: be copied (or written) by another process
GENERATION_GRACE_S = 60.0
#: a run folder of older dbtest (outside any cache dir's folder) whose owner is gone is
#: left this long after its mark was written (its background copy may still read it)
LEGACY_GRACE_S = 300.0
#: folders of spare copies, one per server account: ``<run base>/dbtest-spares-<uid>``
SPARES_PREFIX = "dbtest-spares-"
# names of what this module creates; ``dbtest clean`` removes nothing else
_CLUSTER_NAME = re.compile(r"pg\d+-[0-9a-f]{16}")
_GENERATION_NAME = re.compile(r"gen-(\d+)(\.partial)?")  # gen-<time.time_ns()>
#: names of run and initdb folders (``tempfile.mkdtemp``'s)
RUN_DIR_NAME = re.compile(r"dbtest-(?:initdb-)?[a-z0-9_]{8}")


def cluster_dirs(cache_dir: Path) -> list[Path]:
    """The cached clusters in ``cache_dir`` (one per binaries and settings)."""
    folder = cache_dir / "clusters"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _CLUSTER_NAME.fullmatch(p.name) and p.is_dir())


def stale_generations(cluster_dir: Path, keep: int = 1) -> list[Path]:
    """Generations of a cached cluster that may go: all but ``current`` and the ``keep``
    newest, once replaced more than :data:`GENERATION_GRACE_S` ago (a run that started
    just before may still copy one), and half-written ones abandoned that long ago."""
    try:
        current = os.readlink(cluster_dir / "current")
    except OSError:
        current = None
    now, grace = time.time_ns(), int(GENERATION_GRACE_S * 1e9)
    done: list[tuple[int, Path]] = []
    stale: list[Path] = []
    for path in cluster_dir.iterdir():
        match = _GENERATION_NAME.fullmatch(path.name)
        if not (match and path.is_dir()):
            continue
        made = int(match.group(1))
        if not match.group(2):
            done.append((made, path))
        elif now - made > grace:
            stale.append(path)  # its writer died
    done.sort()
    kept = {path.name for _, path in done[-keep:]} | {current}
    # each generation was replaced when the next newer one was made
    for (_, path), (replaced, _) in itertools.pairwise(done):
        if path.name not in kept and now - replaced > grace:
            stale.append(path)
    return sorted(stale)


def remove_generation(path: Path) -> None:
    """Delete a cached generation and its remembered size."""
    shutil.rmtree(path, ignore_errors=True)
    path.with_name(path.name + ".size").unlink(missing_ok=True)


def spare_dirs(cache_dir: Path, bases: list[Path]) -> list[Path]:
    """This cache dir's namespace folders (run folders and spares, in every run base),
    and those of this user's cache dirs that no longer exist (their owner is gone)."""
    found = []
    own = spares.namespace(cache_dir)
    for base in _existing(bases):
        for folder in spares.namespaces(base):
            if folder.name == own:
                found.append(folder)
                continue
            try:
                recorded = Path((folder / "cache_dir").read_text().strip())
            except OSError:
                continue  # being created right now
            if not recorded.exists():
                found.append(folder)
    return found


def _run_dir_parents(cache_dir: Path, bases: list[Path]) -> list[Path]:
    """Where run folders may be: this cache dir's namespace folders, those of vanished
    cache dirs, and (from dbtest before namespaces) each run base itself."""
    return _existing(bases) + spare_dirs(cache_dir, bases)


def orphan_run_dirs(cache_dir: Path, bases: list[Path]) -> list[Path]:
    """Run and initdb folders that carry dbtest's mark and whose owner is provably gone
    (see :func:`lifetime.in_use`)."""
    found = []
    legacy = set(_existing(bases))
    for parent in _run_dir_parents(cache_dir, bases):
        for folder in sorted(parent.glob("dbtest-*")):
            if not RUN_DIR_NAME.fullmatch(folder.name):
                continue
            with contextlib.suppress(OSError):
                mark = folder / lifetime.OWNED_MARK
                if not mark.is_file() or lifetime.in_use(folder):
                    continue
                # older dbtest copied a stopped run's folder into the cache from a
                # background shell its mark does not name: give that copy time to end
                if parent in legacy and time.time() - mark.stat().st_mtime < LEGACY_GRACE_S:
                    continue
                found.append(folder)
    return found


def trash_dirs(cache_dir: Path, bases: list[Path]) -> list[Path]:
    """Run folders renamed ``*.trash`` whose background ``rm -rf`` did not finish.

    (One being deleted right now may be listed; deleting it twice does no harm.)
    """
    return [folder for parent in _run_dir_parents(cache_dir, bases)
            for folder in sorted(parent.glob("dbtest-*.trash"))
            if RUN_DIR_NAME.fullmatch(folder.name.removesuffix(".trash")) and folder.is_dir()]


def _existing(folders: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for folder in folders:
        with contextlib.suppress(OSError):
            key = folder.resolve()
            if key not in seen and folder.is_dir():
                seen.add(key)
                out.append(folder)
    return out

