"""`ClusterCache`: the cached, initdb'd cluster a :class:`LocalCluster` copies at start.

``initdb`` runs once per binary version and settings; its cluster is kept in the cache
as *generations* (see :mod:`dbtest.provision._generations`): a start copies the newest
one its project made, a run that built templates writes a new one back, and the cache
is pruned below ``cache_max_mb``. The server itself is :mod:`dbtest.provision._local`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dbtest.errors import ProvisionError, StartupFailed
from dbtest.provision import _generations as generations
from dbtest.provision import _lifetime as lifetime
from dbtest.provision._binaries import PgBinaries
from dbtest.provision._files import make_dir
from dbtest.provision._leftovers import RUN_DIR_NAME
from dbtest.provision._runas import Account, chown_tree, server_account

__all__ = ["CLUSTER_FORMAT", "INITDB_ARGS", "ClusterCache"]

#: bump when the cached cluster's layout or initdb settings change
CLUSTER_FORMAT = 2
# 1 MiB WAL segments: the cached cluster (and each copy of it) is 15 MiB smaller
INITDB_ARGS = ("-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
               "--wal-segsize=1")


class ClusterCache:
    """The cached cluster of ``binaries`` in ``cache_dir``, made by ``initdb`` on first use."""

    def __init__(self, binaries: PgBinaries, cache_dir: Path, *, project: str | None = None,
                 max_mb: int | None = None) -> None:
        self.binaries = binaries
        self.cache_dir = cache_dir
        self.account: Account = server_account()
        key = hashlib.sha256(json.dumps(
            [CLUSTER_FORMAT, str(binaries.bindir), binaries.version, INITDB_ARGS,
             self.account.uid]).encode()).hexdigest()[:16]
        self.cluster_dir = cache_dir / "clusters" / f"pg{binaries.major}-{key}"
        #: who runs it (project root and schema settings): a run starts from the newest
        #: generation its project made, so concurrent projects keep their templates
        self.project = project
        #: ``cache_max_mb``: the cache is pruned below this after each persist
        self.max_mb = max_mb
        #: set once start() has copied its source (see _store)
        self._copied = threading.Event()

    def _work_base(self) -> Path:
        """The folder ``initdb`` writes a new cluster in (a subclass picks tmpfs)."""
        return make_dir(self.cache_dir / "tmp")

    def _as_account(self) -> dict[str, Any]:
        """``subprocess`` arguments that run a command as the server account."""
        if not self.account.switched:
            return {}
        return {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}

    def current_generation(self) -> Path | None:
        """The newest complete cached cluster, or ``None`` before the first initdb."""
        link = self.cluster_dir / "current"
        try:
            target = self.cluster_dir / os.readlink(link)
        except OSError:
            return None
        return target if (target / "PG_VERSION").is_file() else None

    def ensure_cached(self, lock_timeout: float = 120.0, *,
                      for_start: bool = False) -> tuple[Path, bool]:
        """The cluster to copy from, running ``initdb`` first when none is cached.

        Returns ``(folder, fresh)``; ``fresh`` says this call ran ``initdb``. Then
        ``folder`` is the cached cluster, except ``for_start`` (``LocalCluster.start``, which must
        set ``_copied`` once it copied from it): the new cluster in a work folder on tmpfs,
        as starting from it is faster than from the cache, which a background thread
        fills meanwhile (the first run's start does not wait on a copy to disk). Two first
        runs at once take a file lock, held until the cache is written; a half-written
        cluster from a crashed run has no ``current`` link pointing at it and is simply
        replaced. The lock is an ``flock``: the kernel releases it when its holder dies,
        so the ``initdb.lock`` file a crashed run leaves behind blocks nobody.
        """
        found = self._pick(for_start)
        if found:
            return found, False
        make_dir(self.cluster_dir)
        lock_path = self.cluster_dir / "initdb.lock"
        # not thread-local: the thread that writes the cache releases it
        lock = FileLock(str(lock_path), timeout=lock_timeout, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise ProvisionError(f"waited {lock_timeout:.0f} s for another process's initdb "
                                 f"in {self.cluster_dir}, which holds {lock_path}. Wait for "
                                 f"it, or stop it (fuser {lock_path} names it).") from None
        try:
            found = self._pick(for_start)
            if found:
                lock.release()
                return found, False
            work = self._initdb()
        except BaseException:
            lock.release()
            raise
        self._caching = threading.Thread(target=self._store, args=(work, lock),
                                         name="dbtest-cache-cluster")
        self._caching.start()  # not a daemon: an exiting process finishes the copy
        if for_start:
            return work / "data", True
        # nobody copies from the work folder: the writer must not wait for that (it would
        # hold this process's exit for 120 s); wait for the cache instead
        self._copied.set()
        self._caching.join()
        found = self.current_generation()
        if found is None:
            raise ProvisionError(f"could not write the new cluster into {self.cluster_dir}. "
                                 f"Check free space and permissions, or set cache_dir.")
        return found, True

    def _pick(self, for_start: bool) -> Path | None:
        """The generation to copy; for a start, locked against pruning until copied."""
        if not for_start:
            return self.current_generation()
        picked = generations.pick(self.cluster_dir, self.project)
        if picked is None:
            return None
        self._source_lock: generations.GenerationLock | None = picked[1]
        return picked[0]

    def _release_source(self) -> None:
        held = getattr(self, "_source_lock", None)
        if held is not None:
            held.release()
            self._source_lock = None

    def _initdb(self) -> Path:
        """``initdb`` into a new work folder (tmpfs when there is room); returns it."""
        base = self._work_base()
        for old in base.glob("dbtest-initdb-*"):
            # a run killed during its initdb left this (tens of MB, often in RAM)
            if RUN_DIR_NAME.fullmatch(old.name) and not lifetime.in_use(old):
                lifetime.remove_run_dir(str(old))  # only a folder carrying dbtest's mark
        work = Path(tempfile.mkdtemp(prefix="dbtest-initdb-", dir=base))
        lifetime.mark_owned(work, os.getpid())
        chown_tree(work, self.account)
        data = work / "data"
        proc = subprocess.run([str(self.binaries.tool("initdb")), "-D", str(data), *INITDB_ARGS],
                              capture_output=True, text=True, check=False,
                              cwd=work,  # the caller's cwd may be closed to the account
                              **self._as_account())
        if proc.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise StartupFailed(f"initdb ({self.binaries.tool('initdb')}) failed: "
                                f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        with (data / "pg_hba.conf").open("w") as fh:
            # unix socket: private folder, trust; TCP (only when asked): a password
            fh.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                     "host all all ::1/128 scram-sha-256\n")
        return work

    def _store(self, work: Path, lock: FileLock) -> None:
        """Copy a fresh cluster from ``work`` into the cache, then release ``lock``."""
        try:
            generations.store(work / "data", self.cluster_dir, None)
        except (OSError, ProvisionError):
            pass  # the next run will try again; this one is already running
        finally:
            lock.release()
            self._copied.wait(timeout=120)  # start() may still be copying from it
            lifetime.remove_run_dir(str(work), background=True)

    def wait_cached(self, timeout: float | None = None) -> None:
        """Wait for a first run's copy of its new cluster into the cache."""
        caching = getattr(self, "_caching", None)
        if caching is not None:
            caching.join(timeout)

    def prune(self) -> list[tuple[Path, int, str]]:
        """Remove cached generations nobody needs (see :func:`generations.prune`)."""
        return generations.prune(generations.cluster_dirs_of(self.cluster_dir), self.max_mb)
