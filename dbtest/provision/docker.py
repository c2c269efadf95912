"""The ``docker`` backend: a container through testcontainers."""

from __future__ import annotations

from typing import Any

from dbtest.errors import ProvisionError, StartupFailed
from dbtest.provision.server import ConnectionParams, PostgresServer

__all__ = ["DEFAULT_IMAGE", "DockerPostgres", "docker_available"]

DEFAULT_IMAGE = "postgres:16-alpine"


def docker_available(timeout: float = 1.0) -> tuple[bool, str]:
    """Whether a Docker daemon answers a ping, and why not."""
    try:
        import docker
    except ImportError:
        return False, "the docker package is not installed (pip install testcontainers)"
    try:
        client = docker.from_env(timeout=int(max(timeout, 1)))
        client.ping()
        client.close()
    except Exception as exc:  # docker raises a zoo of types: DockerException, requests'...
        return False, f"no Docker daemon answers ({type(exc).__name__}: {str(exc)[:120]})"
    return True, "daemon answers"


class DockerPostgres:
    """A PostgreSQL container with test settings, ready once a real query answers."""

    def __init__(self, image: str = DEFAULT_IMAGE) -> None:
        self.image = image
        self.container: Any = None

    def build(self) -> Any:
        """The (not yet started) testcontainers container, configured for tests."""
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer(self.image, username="postgres", password="dbtest",
                                      dbname="postgres", driver=None)
        return container.with_command(
            "postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300")

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

        params = ConnectionParams(host, port, "postgres", "dbtest")
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
