"""The ``docker`` backend: a container through testcontainers."""

from __future__ import annotations

from typing import Any

from dbtest.errors import ProvisionError, StartupFailed
from dbtest.provision.server import ConnectionParams, PostgresServer

__all__ = ["DEFAULT_IMAGE", "DockerPostgres", "docker_available"]

DEFAULT_IMAGE = "postgres:16-alpine"


def docker_available(timeout: float = 1.0) -> tuple[bool, str]:
    """Whether a Docker daemon answers a ping (within ``timeout``), and why not.

    Goes through testcontainers' client so that its settings (``DOCKER_HOST``, the
    testcontainers properties file, the docker context) decide which daemon is asked.
    """
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return False, "testcontainers is not installed (pip install testcontainers)"
    try:
        client = DockerClient(timeout=timeout)
        try:
            client.client.ping()
        finally:
            client.client.close()
    except Exception as exc:  # DockerException, requests' ConnectionError/ReadTimeout, OSError
        return False, f"no Docker daemon answers ({type(exc).__name__}: {str(exc)[:120]})"
    return True, "daemon answers"


class DockerPostgres:
    """A PostgreSQL container with test settings, ready once a real query answers."""

    def __init__(self, image: str = DEFAULT_IMAGE) -> None:
        import secrets

        self.image = image
        self.password = secrets.token_urlsafe(12)
        self.container: Any = None

    def options(self) -> dict[str, Any]:
        """What the container is made of: image, credentials and test settings."""
        return {"image": self.image, "username": "postgres", "password": self.password,
                "dbname": "postgres", "driver": None,
                # a short client timeout: a daemon that accepts but never answers would
                # otherwise hold the run for testcontainers' default 60 s
                "docker_client_kw": {"timeout": 10}}

    def command(self) -> str:
        """The server command line: the same test settings as local clusters."""
        return ("postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=300")

    def build(self) -> Any:
        """The (not yet started) testcontainers container; this is where Docker is called."""
        from testcontainers.community.postgres import PostgresContainer

        return PostgresContainer(**self.options()).with_command(self.command())

    def start(self) -> PostgresServer:
        ok, why = docker_available()
        if not ok:
            raise ProvisionError(f"backend 'docker' was requested but {why}. Start Docker, or "
                                 f"use backend 'local' (PostgreSQL binaries) or 'url'.")
        self.container = self.build()
        try:
            self.container.start()  # testcontainers waits with `select version()`
            host = self.container.get_container_host_ip()
            port = int(self.container.get_exposed_port(5432))
        except Exception as exc:
            self.stop()
            raise StartupFailed(f"the {self.image} container did not start: {exc}") from None
        from dbtest.provision.url import connect_url

        params = ConnectionParams(host, port, "postgres", self.password)
        server = connect_url(params.url(driver=""))
        server.backend = "docker"
        server.details["image"] = self.image
        return server

    def stop(self) -> None:
        if self.container is not None:
            try:
                self.container.stop()
            finally:
                self.container = None
