"""The ``docker`` backend: a PostgreSQL container through testcontainers, kept for reuse.

The container runs the image named by the ``docker_image`` setting with the same server
settings as local clusters (:mod:`dbtest.provision._pgconf`) and its data on a tmpfs. It
is named after the image, those settings and the cache dir (``dbtest-pg-<key>``) and
labelled ``dbtest.container=<key>``: every process with the same image and cache dir
uses the same container (concurrent runs and xdist workers share it; templates are built
once under the server's advisory lock). Once it holds templates it is kept running after
the run, and the next run reuses it, applying zero migrations; ``dbtest down`` removes
it. A container whose users all died (``kill -9`` included) is removed by their
watchdogs (:mod:`dbtest.provision._docker_lease`): Ryuk is not used. A container without
dbtest's label is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbtest.errors import ProvisionError, RefusedError, StartupFailed
from dbtest.provision import _docker_lease as leases
from dbtest.provision._pgconf import INITDB_OPTIONS, SERVER_SETTINGS, server_options
from dbtest.provision._server import ConnectionParams, PostgresServer

__all__ = ["DEFAULT_IMAGE", "DockerPostgres", "container_key", "docker_available",
           "down_containers"]

#: the official image of the server major version dbtest targets (the ``docker_image``
#: setting's default)
DEFAULT_IMAGE = "postgres:16"
#: bump when the container's make-up changes, so old kept containers are not reused
CONTAINER_FORMAT = 1
#: data dir inside the container, on a tmpfs
PGDATA = "/var/lib/postgresql/data"
NAME_PREFIX = "dbtest-pg-"
LABEL = "dbtest.container"
CACHE_LABEL = "dbtest.cache"
_RYUK = threading.Lock()


def docker_available(timeout: float = 1.0) -> tuple[bool, str]:
    """Whether a Docker daemon answers a ping (within ``timeout``), and why not.

    Goes through testcontainers' client so that its settings (``DOCKER_HOST``, the
    testcontainers properties file, the docker context) decide which daemon is asked.
    """
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return False, "testcontainers is not installed (pip install 'dbtest[docker]')"
    try:
        client = DockerClient(timeout=timeout)
        try:
            client.client.ping()
        finally:
            client.client.close()
    except Exception as exc:  # DockerException, requests' ConnectionError/ReadTimeout, OSError
        return False, f"no Docker daemon answers ({type(exc).__name__}: {str(exc)[:120]})"
    return True, "daemon answers"


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def cache_label(cache_dir: Path) -> str:
    """The ``dbtest.cache`` label of containers made for ``cache_dir``."""
    return _digest(str(cache_dir.expanduser().resolve()))


def container_key(image: str, cache_dir: Path) -> str:
    """What a container is made of (image, server settings, cache dir), as a short hash."""
    return _digest([CONTAINER_FORMAT, image, SERVER_SETTINGS, INITDB_OPTIONS,
                    cache_label(cache_dir)])


@dataclass
class _Running:
    """The container this object uses (its name), and this process's lease on it."""

    name: str
    lease: Path
    watchdog: Any
    params: ConnectionParams


class DockerPostgres:
    """A PostgreSQL container with test settings, ready once a real query answers."""

    def __init__(self, image: str = DEFAULT_IMAGE, cache_dir: Path | None = None, *,
                 timeout: float = 60.0) -> None:
        if cache_dir is None:
            from dbtest.settings import default_cache_dir

            cache_dir = default_cache_dir()
        self.image = image
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.key = container_key(image, cache_dir)
        self.name = NAME_PREFIX + self.key
        self.password = secrets.token_urlsafe(18)
        self.lease_dir = cache_dir / "docker" / self.name
        self.lock = cache_dir / "docker" / f"{self.name}.lock"
        #: whether :meth:`start` found the container running (and so its templates)
        self.reused = False
        self._running: _Running | None = None

    # -- what the container is made of ----------------------------------------------------
    def labels(self) -> dict[str, str]:
        return {LABEL: self.key, CACHE_LABEL: cache_label(self.cache_dir),
                "dbtest.image": self.image}

    def options(self) -> dict[str, Any]:
        """The testcontainers ``PostgresContainer`` arguments."""
        return {"image": self.image, "username": "postgres", "password": self.password,
                "dbname": "postgres", "driver": None,
                # a short client timeout: a daemon that accepts but never answers would
                # otherwise hold the run for testcontainers' default 60 s
                "docker_client_kw": {"timeout": 10}}

    def command(self) -> list[str]:
        """The server command line: the same settings as local clusters."""
        return ["postgres", *server_options()]

    def build(self) -> Any:
        """The (not yet started) testcontainers container; this is where Docker is called."""
        from testcontainers.community.postgres import PostgresContainer

        class _Container(PostgresContainer):
            def _connect(self) -> None:
                """No ``psql`` polled inside the container every second: dbtest waits with a
                real query from here (see ``DockerPostgres._wait_ready``)."""

        return (_Container(**self.options()).with_command(self.command())
                .with_name(self.name).with_env("PGDATA", PGDATA)
                .with_env("POSTGRES_INITDB_ARGS", " ".join(INITDB_OPTIONS))
                .with_tmpfs_mount(PGDATA).with_kwargs(labels=self.labels()))

    # -- start / stop ---------------------------------------------------------------------
    def start(self) -> PostgresServer:
        ok, why = docker_available()
        if not ok:
            raise ProvisionError(f"backend 'docker' was requested but {why}. Start Docker, or "
                                 f"use backend 'local' (PostgreSQL binaries) or 'url'.")
        from testcontainers.core.docker_client import DockerClient, get_docker_host

        client = DockerClient(timeout=10)
        try:
            with leases.lease_lock(self.lock):
                leases.drop_dead_leases(self.lease_dir)
                # the lease and its watchdog first: a kill while the container is created
                # leaves no container behind either
                lease = leases.take_lease(self.lease_dir, os.getpid())
                watchdog = leases.start_watchdog(self.lock, lease, self.name,
                                                 get_docker_host())
                self._running = _Running(self.name, lease, watchdog,
                                         ConnectionParams("", 0, "postgres"))
                try:
                    container = self._find(client.client)
                    self.reused = container is not None
                    if container is None:
                        container = self._create()
                    else:
                        self.password = _env(container).get("POSTGRES_PASSWORD", "")
                    return self._wait_ready(client, container)
                except BaseException:
                    self._give_back(client, keep=False)
                    raise
        finally:
            client.client.close()

    def _find(self, api: Any) -> Any:
        """The running container of this key, ``None`` when there is none. A stopped one
        of ours is removed; one of that name without our label is refused."""
        import docker.errors

        try:
            container = api.containers.get(self.name)
        except docker.errors.NotFound:
            return None
        if container.labels.get(LABEL) != self.key:
            raise RefusedError(f"a container named {self.name} exists but dbtest did not make "
                               f"it (no label {LABEL}={self.key}); dbtest leaves it alone. "
                               f"Rename or remove it (docker rm -f {self.name}).")
        if container.status == "running":
            return container
        container.remove(force=True, v=True)  # it stopped: its tmpfs, and templates, are gone
        return None

    def _create(self) -> Any:
        from testcontainers.core.config import testcontainers_config as tc_config

        tc = self.build()
        with _RYUK:  # dbtest's watchdogs stand in for Ryuk, which would kill kept containers
            saved = getattr(tc_config, "_ryuk_disabled", None)
            tc_config.ryuk_disabled = True
            try:
                tc.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    tc.stop()
                raise StartupFailed(f"the {self.image} container did not start: {exc}. Check "
                                    f"that the image exists locally or can be pulled (docker "
                                    f"pull {self.image}), or set docker_image.") from None
            finally:
                tc_config._ryuk_disabled = saved
        return tc._container

    def _endpoints(self, client: Any, container: Any) -> list[tuple[str, int]]:
        """Where the server can be reached from here, as testcontainers sees it first, then
        the published port on loopback (a local daemon; testcontainers takes this machine
        for a container when it finds ``/.dockerenv``)."""
        container.reload()
        published = (container.attrs["NetworkSettings"]["Ports"] or {}).get("5432/tcp") or []
        mapped = int(published[0]["HostPort"]) if published else 5432
        from testcontainers.core.config import ConnectionMode
        from testcontainers.core.docker_client import get_docker_host

        mode = client.get_connection_mode()
        if mode == ConnectionMode.gateway_ip:
            host = client.gateway_ip(container.id)
        elif mode == ConnectionMode.bridge_ip:
            host = client.bridge_ip(container.id)
        else:
            host = client.host()
        found = [(host, mapped if mode.use_mapped_port else 5432)]
        if published and (get_docker_host() or "unix://").startswith("unix://"):
            found.append(("127.0.0.1", mapped))
        return list(dict.fromkeys(found))

    def _wait_ready(self, client: Any, container: Any) -> PostgresServer:
        import psycopg

        deadline = time.monotonic() + self.timeout
        endpoints = self._endpoints(client, container)
        checked, last = time.monotonic(), "no answer yet"
        while True:
            for host, port in endpoints:
                params = ConnectionParams(host, port, "postgres", self.password)
                try:
                    with psycopg.connect(params.dsn(), connect_timeout=3) as conn:
                        row = conn.execute("SHOW server_version").fetchone()
                        assert row is not None
                        version, num = str(row[0]).split()[0], conn.info.server_version
                except psycopg.OperationalError as exc:
                    last = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    continue
                assert self._running is not None
                self._running.params = params
                return PostgresServer(params, version, "docker", num, details={
                    "image": self.image, "container": self.name, "id": container.short_id,
                    "reused": self.reused})
            now = time.monotonic()
            if now > deadline or now - checked > 0.5:
                checked = now
                container.reload()
                if container.status != "running" or now > deadline:
                    logs = container.logs(tail=20).decode(errors="replace").strip()
                    what = ("exited" if container.status != "running" else
                            f"did not answer within {self.timeout:.0f} s")
                    raise StartupFailed(f"the {self.image} container {self.name} {what} "
                                        f"(tried {endpoints}: {last}). Its log:\n{logs}")
            time.sleep(0.02)

    def holds_templates(self) -> bool:
        """Whether the server holds a template dbtest built (worth keeping for reuse)."""
        from dbtest._databases import admin_connection, list_databases

        if self._running is None or not self._running.params.host:
            return False
        try:
            with admin_connection(self._running.params.dsn()) as conn:
                return any((d.mark or {}).get("purpose") == "template"
                           for d in list_databases(conn))
        except Exception:
            return False

    def stop(self, *, keep_data: bool = False) -> None:
        """Give the container back: it stays running for later runs when it holds templates
        (or ``keep_data``), or while another process uses it; otherwise it is removed."""
        if self._running is None:
            return
        from testcontainers.core.docker_client import DockerClient

        keep = keep_data or self.holds_templates()
        client = DockerClient(timeout=10)
        try:
            with leases.lease_lock(self.lock):
                self._give_back(client, keep=keep)
        finally:
            client.client.close()

    def _give_back(self, client: Any, *, keep: bool) -> None:
        running, self._running = self._running, None
        assert running is not None
        leases.give_back(running.lease, running.watchdog)
        if not keep and not leases.live_leases(self.lease_dir):
            leases.remove_container(client.client, running.name, self.key)


def _env(container: Any) -> dict[str, str]:
    pairs = (item.partition("=") for item in container.attrs["Config"]["Env"] or [])
    return {key: value for key, _, value in pairs}


@dataclass(frozen=True)
class DownReport:
    """What :func:`down_containers` did."""

    removed: tuple[str, ...]
    #: containers left running because a live process still uses them: name -> pids
    in_use: dict[str, list[int]]


def down_containers(cache_dir: Path) -> DownReport:
    """Remove the containers kept for ``cache_dir``'s runs (``dbtest down``); ones that a
    live process still uses are left running. Only containers carrying dbtest's labels for
    this cache dir are looked at. Nothing happens (and Docker is not asked) when no run
    with this cache dir ever made one."""
    folder = cache_dir / "docker"
    if not folder.is_dir() or not any(folder.glob(f"{NAME_PREFIX}*.lock")):
        return DownReport((), {})
    ok, _ = docker_available()
    if not ok:
        return DownReport((), {})
    from testcontainers.core.docker_client import DockerClient

    client = DockerClient(timeout=10)
    removed: list[str] = []
    in_use: dict[str, list[int]] = {}
    try:
        # one call that lists names and labels (the high-level list inspects each container
        # afterwards, and fails on one that a watchdog removes meanwhile)
        found = client.client.api.containers(
            all=True, filters={"label": [LABEL, f"{CACHE_LABEL}={cache_label(cache_dir)}"]})
        for container in found:
            key = (container.get("Labels") or {}).get(LABEL, "")
            name = NAME_PREFIX + key
            if f"/{name}" not in (container.get("Names") or []):
                continue  # not one dbtest named: leave it
            with leases.lease_lock(folder / f"{name}.lock"):
                leases.drop_dead_leases(folder / name)
                users = leases.live_leases(folder / name)
                if users:
                    in_use[name] = users
                elif leases.remove_container(client.client, container["Id"], key):
                    removed.append(name)
    finally:
        client.client.close()
    return DownReport(tuple(removed), in_use)
