"""``dbtest clean``: remove what dbtest left behind, and only that."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from dbtest import provision
from dbtest._commands._spec import PROG, Command, Invocation, human_size, say
from dbtest.provision import (
    DetachedServer,
    detached_server_url,
    detached_servers,
    remove_state,
    state_lock,
    state_path,
)

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["COMMANDS", "CleanItem", "CleanReport", "clean", "clean_templates"]


@dataclass(frozen=True)
class CleanItem:
    """One thing dbtest made that ``clean`` found stale."""

    kind: str
    path: Path
    size: int
    removed: bool = False
    #: why it could not be removed
    error: str | None = None


@dataclass(frozen=True)
class CleanReport:
    """What ``clean`` found (and removed, unless ``dry_run``)."""

    items: tuple[CleanItem, ...]
    dry_run: bool
    #: bytes dbtest's things of this cache dir took before and after (its cache dir and
    #: its folders in tmpfs and the temp dir)
    size_before: int = 0
    size_after: int = 0

    @property
    def total_size(self) -> int:
        """Bytes taken by everything found."""
        return sum(item.size for item in self.items)


def clean(settings: Settings, dry_run: bool = False, *, databases: bool = True) -> CleanReport:
    """Remove what dbtest left behind: only what it made and marked, and only what
    belongs to this cache dir or to an owner that is provably gone.

    That is: cluster generations no run needs (beyond ``current``, the two newest, each
    project's newest and any in use; see ``cache_max_mb``), spare copies of
    generations that are gone or half-made by dead processes, run folders (marked
    ``.dbtest-owned``) whose owner and server are gone, half-deleted ``*.trash``
    folders, the folders of this user's cache dirs that no longer exist, the record of
    a detached server that has stopped; with ``databases``, also stale databases (see
    :func:`clean_templates`). Each item says why it goes. Servers in use and anything
    without dbtest's mark are left alone. ``dry_run`` lists without removing.

    :param dry_run: list what would be removed, remove nothing
    :param databases: also drop stale databases (Python only: the CLI always does)
    """

    cache = settings.cache_dir
    own = _own_folders(settings)
    before = sum(_disk_size(p) for p in own)
    items = []
    if databases:
        from dbtest.errors import PostgresNotFound

        with contextlib.suppress(PostgresNotFound):  # no server, so no databases to clean
            items += clean_templates(settings, dry_run)
    for path, size, why in provision.prune_generations(
            provision.cluster_dirs(cache), settings.cache_max_mb, dry_run=dry_run):
        items.append(CleanItem(f"cluster generation ({why})", path, size, removed=not dry_run))
    found: list[tuple[str, Path, Callable[[], None] | None]] = []
    for ns in provision.spare_dirs(cache):
        sizes = {path: (why, _disk_size(path))
                 for path, why in provision.sweep_spares(ns, dry_run=True)}
        done = set() if dry_run else {path for path, _ in provision.sweep_spares(ns)}
        items += [CleanItem(f"spare cluster copy ({why})", path, size, removed=path in done)
                  for path, (why, size) in sizes.items()]
    registered: set[Path] = set()
    for entry, reg in provision.orphan_servers(cache / "run"):
        if reg is None:
            found.append(("unreadable registry entry", entry, None))
            continue
        registered.add(Path(reg.run_dir))
        found.append(("run folder of a dead process", Path(reg.run_dir),
                      partial(provision.retire_server, entry, reg)))
    found += [("run folder of a dead process", p, partial(provision.retire_run_dir, p))
              for p in provision.orphan_run_dirs(cache) if p not in registered]
    found += [("half-deleted run folder", p, None) for p in provision.trash_dirs(cache)]
    for state in detached_servers(cache):
        if not state.running():
            found.append((f"record of a stopped detached server (pid {state.pid}, for "
                          f"{state.project_root or 'a project'})", state_path(cache),
                          partial(_forget_record, cache, state)))
    found += [("record of a finished xdist run", p, None)
              for p in sorted((cache / "shared").glob("*.json"))
              if not _shared_server_running(p)]
    for kind, path, remove in found:
        size = _disk_size(path)
        if dry_run:
            items.append(CleanItem(kind, path, size))
            continue
        error = _remove(path, remove)
        items.append(CleanItem(kind, path, size, removed=error is None, error=error))
    if not dry_run:
        items += _drop_vanished_namespaces(cache)
    after = before if dry_run else sum(_disk_size(p) for p in own)
    return CleanReport(tuple(items), dry_run, before, after)


def _forget_record(cache: Path, state: DetachedServer) -> None:
    with state_lock(cache):
        remove_state(cache, state)


def _own_folders(settings: Settings) -> list[Path]:
    own = provision.spare_namespace(settings.cache_dir)
    return [settings.cache_dir, *(p for p in provision.spare_dirs(settings.cache_dir)
                                  if p.name == own)]


def _drop_vanished_namespaces(cache: Path) -> list[CleanItem]:
    """Remove the (now empty) folders of this user's cache dirs that no longer exist."""
    out = []
    own = provision.spare_namespace(cache)
    for ns in provision.spare_dirs(cache):
        if ns.name == own:
            continue
        try:
            leftover = [p for p in ns.rglob("*") if p.is_file() and p.name != "cache_dir"]
        except FileNotFoundError:
            continue  # another clean (or its owner) removed it meanwhile
        if leftover:
            continue  # a run folder still in use: its owner removes it
        with contextlib.suppress(OSError):
            if Path((ns / "cache_dir").read_text().strip()).exists():
                continue  # that cache dir was made again meanwhile
        size = _disk_size(ns)
        shutil.rmtree(ns, ignore_errors=True)
        out.append(CleanItem("folder of a cache dir that no longer exists", ns, size,
                             removed=not ns.exists()))
    return out


def clean_templates(settings: Settings, dry_run: bool = False) -> list[CleanItem]:
    """Stale databases dbtest made: on the configured server (``url`` or a detached
    one) or inside the cached local cluster, whose templates live on with it.

    Stale means: worker and fresh databases of dead test processes, and templates
    unused for a week beyond the five most recently used (see :mod:`dbtest._janitor`).
    """
    from dbtest._databases import admin_connection
    from dbtest._janitor import drop_stale, stale_databases
    from dbtest.provision import LocalCluster, Provisioner, find_binaries

    url = settings.url or detached_server_url(settings.cache_dir)
    if url is None and settings.backend in ("docker",):
        return []
    if url is None and settings.backend in ("auto", "local") and LocalCluster(
            find_binaries(settings.pg_bin), settings.cache_dir).current_generation() is None:
        return []  # no cached cluster, so no databases in it: start nothing
    run = settings.replace(url=url, backend="url") if url else settings.replace(
        backend="local" if settings.backend == "auto" else settings.backend)
    provisioner = Provisioner(run)
    server = provisioner.start()
    where = "server" if url else "cached cluster"
    persist = False
    try:
        with admin_connection(server.dsn) as admin:
            stale = stale_databases(admin)
            failed = {} if dry_run else dict(
                f.split(": ", 1) for f in drop_stale(admin, stale))
        # a cached cluster keeps the drops only when persisted (a url server needs nothing)
        persist = bool(stale) and not dry_run
    finally:
        provisioner.stop(persist=persist)
    return [CleanItem(f"{s.reason} ({where})", Path(s.name), s.size_bytes,
                      removed=not dry_run and s.name not in failed,
                      error=failed.get(s.name)) for s in stale]


def _shared_server_running(state: Path) -> bool:
    try:
        return provision.pid_alive(int(json.loads(state.read_text())["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _remove(path: Path, remove: Callable[[], None] | None) -> str | None:
    """Remove ``path`` (through ``remove`` when given); the reason when it stays."""
    try:
        if remove is not None:
            remove()
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return "could not remove everything (check permissions)" if path.exists() else None


def _disk_size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a folder being deleted meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total




# -- the command line -------------------------------------------------------------------
def _show_clean(report: CleanReport, run: Invocation) -> int:
    if not report.items:
        say(f"{PROG}: nothing to clean ({human_size(report.size_before)} in use)")
        return 0
    say("would remove:" if report.dry_run else "removed:")
    failed = 0
    for item in report.items:
        note = f"  (kept: {item.error})" if item.error else ""
        failed += item.error is not None
        say(f"  {human_size(item.size):>10}  {item.kind}: {item.path}{note}")
    verb = "would free" if report.dry_run else "freed"
    freed = sum(i.size for i in report.items if report.dry_run or i.removed)
    say(f"{verb} {human_size(freed)} in {len(report.items) - failed} item(s)")
    after = "" if report.dry_run else f", after: {human_size(report.size_after)}"
    say(f"this cache dir's things: before: {human_size(report.size_before)}{after}")
    return 1 if failed else 0


COMMANDS = (Command(clean, _show_clean, short={"dry_run": "-n"}),)
