"""`LocalCluster`: a throwaway server from local (or wheel-shipped) binaries.

``initdb`` runs once per binary version and settings into the cache. Every start copies
that cached cluster into a private run folder (tmpfs when there is room), spawns
``postgres`` directly with test-friendly settings, waits for a real connection and,
on stop, signals it and waits. Templates built during a run can be written back into
the cache as a new *generation*, so the next run finds them already migrated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dbtest.errors import ProvisionError, StartupFailed
from dbtest.provision import lifetime
from dbtest.provision.binaries import PgBinaries
from dbtest.provision.runas import Account, chown_tree, server_account
from dbtest.provision.server import ConnectionParams, PostgresServer

__all__ = ["CLUSTER_FORMAT", "LocalCluster"]

#: bump when the cached cluster's layout or initdb settings change
CLUSTER_FORMAT = 2
# 1 MiB WAL segments: the cached cluster (and each copy of it) is 15 MiB smaller
INITDB_ARGS = ("-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
               "--wal-segsize=1")
SERVER_SETTINGS = {
    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
    "max_connections": "300", "shared_buffers": "32MB", "max_wal_size": "1GB",
    "checkpoint_timeout": "30min", "min_wal_size": "2MB", "autovacuum": "off", "jit": "off",
    "log_min_messages": "warning", "max_prepared_transactions": "20",
    # DSM segments inside the data dir: an immediate shutdown leaves none in /dev/shm
    "dynamic_shared_memory_type": "mmap",
}
TMPFS = Path("/dev/shm")
GENERATIONS_KEPT = 2


class LocalCluster:
    """Starts and stops one PostgreSQL server from ``binaries``, cached in ``cache_dir``."""

    def __init__(self, binaries: PgBinaries, cache_dir: Path, *, backend: str = "local",
                 port: int | None = None, run_base: Path | None = None) -> None:
        self.binaries = binaries
        self.cache_dir = cache_dir
        self.backend = backend
        self.port = port
        self.account: Account = server_account()
        key = hashlib.sha256(json.dumps(
            [CLUSTER_FORMAT, str(binaries.bindir), binaries.version, INITDB_ARGS,
             self.account.uid]).encode()).hexdigest()[:16]
        self.cluster_dir = cache_dir / "clusters" / f"pg{binaries.major}-{key}"
        self._run_base = run_base
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.run_dir: Path | None = None
        self._entry: Path | None = None
        self.generation: Path | None = None

    # -- the cache ------------------------------------------------------------------------
    @property
    def registry(self) -> Path:
        return self.cache_dir / "run"

    def current_generation(self) -> Path | None:
        """The newest complete cached cluster, or ``None`` before the first initdb."""
        link = self.cluster_dir / "current"
        try:
            target = self.cluster_dir / os.readlink(link)
        except OSError:
            return None
        return target if (target / "PG_VERSION").is_file() else None

    def ensure_cached(self) -> tuple[Path, bool]:
        """The cached cluster, running ``initdb`` first when there is none.

        Two first runs at once take a file lock; a half-written cluster from a crashed
        run has no ``current`` link pointing at it and is simply replaced.
        """
        found = self.current_generation()
        if found:
            return found, False
        _make_dir(self.cluster_dir)
        try:
            with FileLock(str(self.cluster_dir / "initdb.lock"), timeout=120):
                found = self.current_generation()
                if found:
                    return found, False
                return self._initdb(), True
        except Timeout:
            raise ProvisionError(f"waited 120 s for another process's initdb in "
                                 f"{self.cluster_dir}; if none runs, delete "
                                 f"{self.cluster_dir / 'initdb.lock'}") from None

    def _initdb(self) -> Path:
        work = Path(tempfile.mkdtemp(prefix="dbtest-initdb-", dir=self._pick_run_base(0)))
        (work / lifetime.OWNED_MARK).touch()
        chown_tree(work, self.account)
        data = work / "data"
        proc = subprocess.run([str(self.binaries.tool("initdb")), "-D", str(data), *INITDB_ARGS],
                              capture_output=True, text=True, check=False,
                              **self._as_account())
        if proc.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise StartupFailed(f"initdb ({self.binaries.tool('initdb')}) failed: "
                                f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        with (data / "pg_hba.conf").open("w") as fh:
            # unix socket: private folder, trust; TCP (only when asked): a password
            fh.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                     "host all all ::1/128 scram-sha-256\n")
        name = f"gen-{time.time_ns()}"
        _copy_tree(data, self.cluster_dir / f"{name}.partial")
        (self.cluster_dir / f"{name}.partial").rename(self.cluster_dir / name)
        self._point_current(name)
        shutil.rmtree(work, ignore_errors=True)
        return self.cluster_dir / name

    def _point_current(self, name: str) -> None:
        tmp = self.cluster_dir / f"current.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(name, tmp)
        tmp.replace(self.cluster_dir / "current")  # atomic: readers see old or new

    def persist(self) -> Path | None:
        """Keep this (stopped) run's data, templates included, as the newest generation."""
        if self.run_dir is None or self._proc is not None:
            return None
        data = self.run_dir / "data"
        name = f"gen-{time.time_ns()}"
        partial = self.cluster_dir / f"{name}.partial"
        _copy_tree(data, partial)
        (partial / "postmaster.pid").unlink(missing_ok=True)
        partial.rename(self.cluster_dir / name)
        self._point_current(name)
        self._prune_generations(keep=name)
        return self.cluster_dir / name

    def _prune_generations(self, keep: str) -> None:
        gens = sorted(p for p in self.cluster_dir.glob("gen-*") if p.is_dir())
        old = [p for p in gens if p.name != keep][: max(0, len(gens) - GENERATIONS_KEPT)]
        for path in old:
            # a reader may still copy it; generations older than a minute are safe to go
            if time.time() - path.stat().st_mtime > 60 or path.name.endswith(".partial"):
                shutil.rmtree(path, ignore_errors=True)

    # -- running --------------------------------------------------------------------------
    def _pick_run_base(self, needed: int) -> Path:
        if self._run_base is not None:
            return _make_dir(self._run_base)
        if TMPFS.is_dir() and os.access(TMPFS, os.W_OK):
            free = shutil.disk_usage(TMPFS).free
            if free > needed * 2 + 256 * 2**20:
                return TMPFS
        return _make_dir(self.cache_dir / "tmp")

    def _as_account(self) -> dict[str, Any]:
        if not self.account.switched:
            return {}
        return {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Copy the cached cluster, start ``postgres`` and wait until it answers."""
        lifetime.reap(self.registry)
        source, _ = self.ensure_cached()
        self.generation = source
        base = self._pick_run_base(_tree_size(source))
        self.run_dir = Path(tempfile.mkdtemp(prefix="dbtest-", dir=base))
        (self.run_dir / lifetime.OWNED_MARK).touch()
        data, sockets = self.run_dir / "data", self.run_dir / "socket"
        try:
            if not self._take_spare(source, base, data):
                _copy_tree(source, data)
            sockets.mkdir(mode=0o700)
            chown_tree(self.run_dir, self.account)
            server = self._spawn(data, sockets, timeout)
        except BaseException:
            self.stop()
            raise
        self._prepare_spare(source, base)
        return server

    # A spare is a copy of the cached cluster made in the background after a start, so
    # the next start renames it into place instead of copying ~1,000 files (~50-150 ms).
    def _spare_dir(self, base: Path) -> Path:
        return base / f"dbtest-spares-{self.account.uid}" / self.cluster_dir.name

    def _take_spare(self, source: Path, base: Path, data: Path) -> bool:
        folder = self._spare_dir(base)
        for spare in sorted(folder.glob(f"{source.name}.*.ready")) if folder.is_dir() else []:
            try:
                spare.rename(data)
            except OSError:
                continue  # another process took it first
            return True
        return False

    def _prepare_spare(self, source: Path, base: Path) -> None:
        folder = self._spare_dir(base)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                stale = not old.name.startswith(source.name + ".")
                if stale or (old.name.endswith(".partial")
                             and time.time() - old.stat().st_mtime > 60):
                    shutil.rmtree(old, ignore_errors=True)
            if any(folder.glob(f"{source.name}.*")):
                return  # ready, or being made by another process
        except OSError:
            return
        stem = folder / f"{source.name}.{os.getpid()}"
        # a detached cp: it finishes even when this process exits right after the run
        subprocess.Popen(["sh", "-c", 'cp -a "$0" "$1" && mv "$1" "$2"', str(source),
                          f"{stem}.partial", f"{stem}.ready"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def _spawn(self, data: Path, sockets: Path, timeout: float) -> PostgresServer:
        password = None
        settings = dict(SERVER_SETTINGS, unix_socket_directories=str(sockets),
                        unix_socket_permissions="0700", listen_addresses="")
        if self.port is not None:
            settings["listen_addresses"] = "127.0.0.1"
            settings["port"] = str(self.port or _free_port())
            password = secrets.token_urlsafe(18)
        else:
            settings["port"] = "5432"  # the socket folder is private: no clash possible
        args = [str(self.binaries.tool("postgres")), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        log = (self.run_dir / "postgres.log").open("wb")  # type: ignore[operator]
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      **self._as_account())
        log.close()
        reg = lifetime.Registration(os.getpid(), self._proc.pid, str(self.run_dir), time.time())
        self._entry = reg.write(self.registry)
        self._watchdog = lifetime.start_watchdog(reg, self._entry)
        params = ConnectionParams(host=str(sockets), port=int(settings["port"]), user="postgres")
        version, version_num = self._wait_ready(data, params, timeout)
        if password:
            self._set_password(params, password)
            params = ConnectionParams("127.0.0.1", int(settings["port"]), "postgres", password)
        return PostgresServer(params, version, self.backend, version_num, details={
            "data_dir": str(data), "run_as": self.account.name, "bindir":
            str(self.binaries.bindir), "log": str(self.run_dir / "postgres.log"),
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
            if _pidfile_ready(pidfile):
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
        if self._watchdog is not None:
            with contextlib.suppress(OSError):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.write(b"done")
                self._watchdog.stdin.close()
            self._watchdog = None
        if self._entry is not None:
            self._entry.unlink(missing_ok=True)
            self._entry = None
        if not keep_data:
            self.discard()

    def discard(self) -> None:
        """Remove the run folder (after :meth:`stop`)."""
        if self.run_dir is not None and self._proc is None:
            lifetime.remove_run_dir(str(self.run_dir), background=True)
            self.run_dir = None


def _pidfile_ready(pidfile: Path) -> bool:
    try:
        return pidfile.read_text().rstrip().endswith("ready")
    except OSError:
        return False


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot create {path}: {exc.strerror}. Set cache_dir "
                             f"(DBTEST_CACHE_DIR) to a writable folder.") from None
    if not os.access(path, os.W_OK):
        raise ProvisionError(f"{path} is not writable. Set cache_dir (DBTEST_CACHE_DIR) to a "
                             f"writable folder.")
    return path


def _copy_tree(src: Path, dst: Path) -> None:
    # cp -a keeps owners and modes (the cluster belongs to the server account) and is
    # much faster than shutil.copytree on ~1,000 small files.
    proc = subprocess.run(["cp", "-a", str(src), str(dst)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise ProvisionError(f"copying {src} to {dst} failed: {proc.stderr.strip()}. Check free "
                             f"space and permissions, or set cache_dir.")


def _tree_size(path: Path) -> int:
    # remembered beside the generation: walking ~1,000 files costs ~10 ms per start
    memo = path.with_name(path.name + ".size")
    with contextlib.suppress(OSError, ValueError):
        return int(memo.read_text())
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    with contextlib.suppress(OSError):
        memo.write_text(str(size))
    return size


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
