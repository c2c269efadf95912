"""`LocalCluster`: a throwaway server from local (or wheel-shipped) binaries.

``initdb`` runs once per binary version and settings into the cache (see
:mod:`dbtest.provision._cluster_cache`). Every start copies
that cached cluster into a private run folder (tmpfs when there is room), spawns
``postgres`` directly with test-friendly settings, waits for a real connection and,
on stop, signals it and waits. Templates built during a run can be written back into
the cache as a new *generation*, so the next run finds them already migrated.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dbtest.errors import ProvisionError, StartupFailed
from dbtest.provision import _fastpath as fastpath
from dbtest.provision import _generations as generations
from dbtest.provision import _leftovers as leftovers
from dbtest.provision import _lifetime as lifetime
from dbtest.provision import _spares as spares
from dbtest.provision._binaries import PgBinaries
from dbtest.provision._cluster_cache import CLUSTER_FORMAT, ClusterCache
from dbtest.provision._files import (
    check_port_free,
    copy_tree,
    free_port,
    make_dir,
    pidfile_ready,
    reachable,
    shut_down_cleanly,
    tree_size,
)
from dbtest.provision._generations import GENERATIONS_KEPT
from dbtest.provision._leftovers import (  # re-exported: the cache's layout lives there
    SPARES_PREFIX,
    cluster_dirs,
    remove_generation,
    stale_generations,
)
from dbtest.provision._pgconf import SERVER_SETTINGS
from dbtest.provision._runas import chown_tree, server_account
from dbtest.provision._server import ConnectionParams, PostgresServer

__all__ = ["CLUSTER_FORMAT", "GENERATIONS_KEPT", "SPARES_PREFIX", "LocalCluster", "cluster_dirs",
           "make_dir", "orphan_run_dirs", "remove_generation", "run_bases", "spare_dirs",
           "stale_generations", "trash_dirs"]

TMPFS = Path("/dev/shm")


class LocalCluster(ClusterCache):
    """Starts and stops one PostgreSQL server from ``binaries``, cached in ``cache_dir``."""

    #: a server this object did not start but may stop (see :meth:`adopt`)
    _adopted_pid: int | None = None

    def __init__(self, binaries: PgBinaries, cache_dir: Path, *, backend: str = "local",
                 port: int | None = None, run_base: Path | None = None,
                 project: str | None = None, max_mb: int | None = None) -> None:
        super().__init__(binaries, cache_dir, project=project, max_mb=max_mb)
        self.backend = backend
        self.port = port
        self._run_base = run_base
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_start: fastpath.WatchdogStart | None = None
        self.run_dir: Path | None = None
        self._entry: Path | None = None
        self._owner = os.getpid()
        self.generation: Path | None = None

    # -- the cache (see ClusterCache) ------------------------------------------------------
    @property
    def registry(self) -> Path:
        return self.cache_dir / "run"

    def persist(self, *, background: bool = False) -> Path | None:
        """Keep this (stopped) run's data, templates included, as the newest generation.

        ``background`` hands the copy (and the run folder's removal) to a detached shell,
        so the test run ends without waiting ~0.2-1 s for it; a run starting meanwhile
        simply uses the previous generation.
        """
        if self.run_dir is None or self._proc is not None:
            return None
        data = self.run_dir / "data"
        if not shut_down_cleanly(data):
            # the server crashed or was killed: every start from this copy would run
            # crash recovery first, and its templates may be half-written
            return None
        if background:
            # a process of its own: the run ends without waiting for the copy; it takes
            # the run folder over (its mark names it) and removes it once copied
            pid = lifetime.spawn_detached([
                sys.executable, "-S", "-m", "dbtest.provision._generations", str(data),
                str(self.cluster_dir), str(self.run_dir), self.project or "",
                "" if self.max_mb is None else str(self.max_mb)])
            with contextlib.suppress(OSError):  # (already copied and removed)
                lifetime.mark_owned(self.run_dir, pid)
            self.run_dir = None
            return None
        gen = generations.store(data, self.cluster_dir, self.project)
        self.prune()
        return gen

    # -- running --------------------------------------------------------------------------
    def _pick_run_base(self, needed: int) -> Path:
        if self._run_base is not None:
            return make_dir(self._run_base)
        if TMPFS.is_dir() and os.access(TMPFS, os.W_OK) and reachable(TMPFS, self.account):
            free = shutil.disk_usage(TMPFS).free
            if free > needed * 2 + 256 * 2**20:
                return TMPFS
        base = make_dir(self.cache_dir / "tmp")
        # As root the server runs as another account, which cannot enter a cache dir
        # under /root (mode 700); Docker's 64 MiB /dev/shm sends every run here.
        if reachable(base, self.account):
            return base
        return Path(tempfile.gettempdir())

    def _run_parent(self, base: Path) -> Path:
        """This cache dir's own folder in ``base`` (see :mod:`dbtest.provision._spares`)."""
        return spares.namespace_dir(base, self.cache_dir)

    def _work_base(self) -> Path:
        return self._run_parent(self._pick_run_base(0))

    def start(self, timeout: float = 30.0, *, detached: bool = False,
              owner_pid: int | None = None) -> PostgresServer:
        """Copy the cached cluster, start ``postgres`` and wait until it answers.

        ``owner_pid`` names the process the registry records as the server's owner
        (default: this one); the reaper stops the server once that process is gone.
        A ``detached`` server outlives every process (``dbtest up --detach``): see
        :meth:`detach`. Until it answers, it is watched like any other, so a start
        that fails or is killed half-way leaves nothing behind.
        """
        self._owner = owner_pid or os.getpid()
        if not lifetime.pid_alive(self._owner):
            raise ProvisionError(f"the process that would own this server (pid {self._owner}, "
                                 f"the pytest-xdist controller) is gone; nothing was started")
        # Fail on a cache dir that cannot be written before anything else touches it.
        make_dir(self.registry)
        lifetime.reap(self.registry)
        if self.port:
            check_port_free(self.port)  # before copying anything or spawning postgres
        source, fresh = self.ensure_cached(for_start=True)
        self.generation = None if fresh else source
        try:
            ns = self._run_parent(self._pick_run_base(tree_size(source)))
            self.run_dir = Path(tempfile.mkdtemp(prefix="dbtest-", dir=ns))
            lifetime.mark_owned(self.run_dir, self._owner)
            # watched from now on: its fork/exec overlaps the copy below
            self._watchdog_start = fastpath.WatchdogStart(self.run_dir, self.registry)
        except BaseException:
            self._release_source()
            self._copied.set()
            raise
        data, sockets = self.run_dir / "data", self.run_dir / "socket"
        try:
            try:
                spare = not fresh and spares.take(ns, self.cluster_dir.name, source, data)
                if not spare:
                    copy_tree(source, data)
            finally:
                self._copied.set()  # the cache writer may now delete a fresh source
            sockets.mkdir(mode=0o700)
            fastpath.give_run_dir(self.run_dir, data, sockets, self.account)
            try:
                server = self._spawn(data, sockets, timeout)
            except StartupFailed:
                if not spare:
                    raise
                # a spare damaged from outside: start once more from the cache itself
                self.stop(keep_data=True)
                shutil.rmtree(data, ignore_errors=True)
                copy_tree(source, data)
                chown_tree(data, self.account)
                server = self._spawn(data, sockets, timeout)
            self._release_source()
            if detached:
                self.detach()
            elif self._owner != os.getpid():
                # another process (an xdist controller) owns it: watch that one instead
                lifetime.start_owner_watchdog(self._owner, self._proc.pid,  # type: ignore[union-attr]
                                              str(self.run_dir), self._entry)  # type: ignore[arg-type]
                self._release_watchdog()
        except BaseException:
            self._release_source()
            self.stop()
            self._copied.set()
            self.wait_cached(timeout=120)  # a failed start leaves no half-written cache copy
            raise
        if not fresh:
            # off the caller's path (a sweep and a fork, 3-9 ms); not a daemon thread: an
            # exiting process still starts the copy
            threading.Thread(target=spares.prepare, args=(ns, self.cluster_dir.name, source),
                             name="dbtest-spare").start()
        return server

    def detach(self) -> None:
        """Let the running server outlive this process (``dbtest up --detach``).

        The watchdog is released and the registry entry re-written with the postmaster
        as its own owner, so the reaper keeps the server while it runs and deletes its
        folder once it has stopped. :meth:`stop` still works from this process; from
        another, use :func:`lifetime.retire` on the entry.
        """
        if self._proc is None or self.run_dir is None or self._entry is None:
            raise ProvisionError("detach() needs a running server: call start() first")
        pid = self._proc.pid
        reg = lifetime.Registration(pid, pid, str(self.run_dir), time.time())
        entry = reg.write(self.registry)  # the new entry first: never a moment with none
        lifetime.mark_owned(self.run_dir, pid)
        self._release_watchdog()
        if entry != self._entry:
            self._entry.unlink(missing_ok=True)
        self._entry = entry

    def release_ownership(self) -> None:
        """Forget the running server without stopping it: its owner (see ``owner_pid``)
        stops it, through :meth:`adopt`, or the owner watchdog does when the owner dies."""
        if self._proc is not None:
            # the postmaster is our child; it goes on after we exit (init adopts it), so
            # there is nothing to wait for and Popen must not warn that it still runs
            self._proc.returncode = 0
            self._proc = None
        self._release_watchdog()
        self._entry = None
        self.run_dir = None

    @classmethod
    def adopt(cls, cache_dir: Path, cluster_dir: Path, run_dir: Path, pid: int, *,
              project: str | None = None, max_mb: int | None = None) -> LocalCluster:
        """A handle on a server another process started (to stop and persist it)."""
        self = cls.__new__(cls)
        self.project, self.max_mb = project, max_mb
        self.cache_dir, self.cluster_dir, self.run_dir = cache_dir, cluster_dir, run_dir
        self.backend, self.port, self._run_base = "local", None, None
        self.account = server_account()
        self._proc = self._watchdog = self._watchdog_start = None
        self._owner, self.generation = os.getpid(), None
        self._copied = threading.Event()
        found = sorted(self.registry.glob(f"{pid}-*.json"))
        self._entry = found[0] if found else None
        self._adopted_pid = pid
        return self

    @property
    def entry(self) -> Path | None:
        """This server's registry entry, while it runs."""
        return self._entry

    def _spawn(self, data: Path, sockets: Path, timeout: float) -> PostgresServer:
        password = None
        settings = dict(SERVER_SETTINGS, unix_socket_directories=str(sockets),
                        unix_socket_permissions="0700", listen_addresses="")
        if self.port is not None:
            settings["listen_addresses"] = "127.0.0.1"
            settings["port"] = str(self.port or free_port())
            password = secrets.token_urlsafe(18)
        else:
            settings["port"] = "5432"  # the socket folder is private: no clash possible
        args = [str(self.binaries.tool("postgres")), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        # the watchdog runs before the server does: a kill at any moment of the start
        # leaves nothing running (it finds the postmaster of its run folder itself)
        pending, self._watchdog_start = self._watchdog_start, None
        if pending is None:
            pending = fastpath.WatchdogStart(data.parent, self.registry)
        self._watchdog = pending.join()
        if self._watchdog is None:
            raise StartupFailed(f"could not start the server's watchdog: {pending.error()}")
        log_path = data.parent / "postgres.log"  # data lives in the run folder
        log = log_path.open("wb")
        cmd, switch = fastpath.as_account(args, self.account)
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      cwd=data.parent, **switch)
        log.close()
        reg = lifetime.Registration(self._owner, self._proc.pid, str(data.parent), time.time())
        try:
            self._entry = reg.write(self.registry)
        except OSError as exc:  # the caller's cleanup stops the postgres just spawned
            raise ProvisionError(f"could not register the server in {self.registry}: "
                                 f"{exc.strerror}. Check free space and permissions of the "
                                 f"cache dir, or set cache_dir.") from None
        lifetime.watch_server(self._watchdog, self._proc.pid, self._entry)
        params = ConnectionParams(host=str(sockets), port=int(settings["port"]), user="postgres")
        version, version_num = self._wait_ready(data, params, timeout)
        if password:
            self._set_password(params, password)
            params = ConnectionParams("127.0.0.1", int(settings["port"]), "postgres", password)
        return PostgresServer(params, version, self.backend, version_num, details={
            "data_dir": str(data), "run_as": self.account.name, "bindir":
            str(self.binaries.bindir), "log": str(log_path),
            "pid": self._proc.pid, "socket_dir": str(sockets)})

    def _wait_ready(self, data: Path, params: ConnectionParams,
                    timeout: float) -> tuple[str, int]:
        import psycopg

        deadline = time.monotonic() + timeout
        pidfile = data / "postmaster.pid"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise StartupFailed(f"postgres exited with code {self._proc.returncode} while "
                                    f"starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise StartupFailed(f"postgres did not accept connections within {timeout:.0f}"
                                    f" s:\n{self.log_tail()}")
            # postmaster.pid's last line says "ready" once it accepts connections
            if pidfile_ready(pidfile):
                known = fastpath.known_version(self.binaries.version, pidfile, self._proc.pid)
                if known is not None and self.port is None:
                    return known
                try:
                    with psycopg.connect(params.dsn(), connect_timeout=5) as conn:
                        row = conn.execute("SHOW server_version").fetchone()
                        assert row is not None
                        return str(row[0]).split()[0], conn.info.server_version
                except psycopg.OperationalError:
                    pass
            time.sleep(0.002)

    def _set_password(self, params: ConnectionParams, password: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(params.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))

    def log_tail(self, lines: int = 20) -> str:
        """The end of this run's server log."""
        if self.run_dir is None:
            return ""
        try:
            text = (self.run_dir / "postgres.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server (fast shutdown) and remove its run folder unless ``keep_data``."""
        if self._proc is not None:
            # a clean (fast) shutdown only when the data is kept; else an immediate one
            lifetime.stop_postmaster(self._proc.pid, str(self.run_dir), fast=keep_data)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
            self._proc = None
        adopted: int | None = getattr(self, "_adopted_pid", None)
        if adopted is not None:
            lifetime.stop_postmaster(adopted, str(self.run_dir), fast=keep_data)
            self._adopted_pid = None
        self._release_watchdog()
        if self._entry is not None:
            self._entry.unlink(missing_ok=True)
            self._entry = None
        if not keep_data:
            self.discard()

    def _release_watchdog(self) -> None:
        if self._watchdog_start is not None:  # a start that failed before its server
            self._watchdog, self._watchdog_start = self._watchdog_start.join(), None
        if self._watchdog is not None:
            lifetime.release_watchdog(self._watchdog)
            self._watchdog = None

    def discard(self) -> None:
        """Remove the run folder (after :meth:`stop`)."""
        if self.run_dir is not None and self._proc is None:
            lifetime.remove_run_dir(str(self.run_dir), background=True)
            self.run_dir = None


def run_bases(cache_dir: Path) -> list[Path]:
    """Every folder a :class:`LocalCluster` may create run folders in (for ``dbtest clean``)."""
    return [TMPFS, cache_dir / "tmp", Path(tempfile.gettempdir())]


def spare_dirs(cache_dir: Path) -> list[Path]:
    """This cache dir's namespace folders (see :func:`leftovers.spare_dirs`)."""
    return leftovers.spare_dirs(cache_dir, run_bases(cache_dir))


def orphan_run_dirs(cache_dir: Path) -> list[Path]:
    """Run folders whose owner is provably gone (see :func:`leftovers.orphan_run_dirs`)."""
    return leftovers.orphan_run_dirs(cache_dir, run_bases(cache_dir))


def trash_dirs(cache_dir: Path) -> list[Path]:
    """Half-deleted run folders (see :func:`leftovers.trash_dirs`)."""
    return leftovers.trash_dirs(cache_dir, run_bases(cache_dir))
