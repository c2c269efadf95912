"""The :class:`Backend` protocol, and the backends that provide a server through it.

A backend starts one server and stops it again, optionally keeping its data (a local
cluster's templates, for the next run). Everything else in dbtest goes through this
protocol (via :class:`~dbtest.provision.Provisioner`), so it never needs to know which
class did the work, nor to reach into one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dbtest.errors import ProvisionError, mask_url
from dbtest.provision._server import PostgresServer

if TYPE_CHECKING:
    from dbtest.provision._docker import DockerPostgres
    from dbtest.provision._local import LocalCluster

__all__ = ["Backend", "DetachedBackend", "DockerBackend", "LocalBackend", "NoDetachedServer",
           "UrlBackend"]


@runtime_checkable
class Backend(Protocol):
    """What provides a :class:`PostgresServer`: ``local``, ``embedded``, ``docker``, ``url``
    or ``detached`` (a server ``dbtest up --detach`` left running)."""

    @property
    def name(self) -> str:
        """The backend's name, as in the ``backend`` setting (or ``detached``)."""
        ...

    @property
    def can_persist(self) -> bool:
        """Whether :meth:`stop` deletes the server's data unless ``persist`` keeps it (a
        local cluster): then databases need not be dropped before a stop that discards.
        ``False`` where the data outlives every stop anyway (docker keeps a container that
        holds templates; url and detached servers run on)."""
        ...

    def start(self) -> PostgresServer:
        """Start (or join) the server; wait until it answers."""
        ...

    def stop(self, *, persist: bool = False, background: bool = False) -> None:
        """Stop what :meth:`start` started; ``persist`` keeps its data for the next run,
        ``background`` lets that copy finish after the call returns."""
        ...

    def describe(self) -> str:
        """One line for summaries: which server, where."""
        ...


class LocalBackend:
    """``local`` and ``embedded``: a :class:`~dbtest.provision._local.LocalCluster` of
    this run, whose data goes with it unless :meth:`stop` persists it."""

    can_persist = True

    def __init__(self, cluster: LocalCluster, *, owner_pid: int | None = None,
                 detached: bool = False) -> None:
        #: the cluster (for the rest of :mod:`dbtest.provision` only)
        self.cluster = cluster
        self._owner_pid = owner_pid
        self._detached = detached

    @property
    def name(self) -> str:
        """``local`` or ``embedded``."""
        return self.cluster.backend

    @property
    def run_dir(self) -> Path | None:
        """The running server's run folder (data, socket, log)."""
        return self.cluster.run_dir

    @property
    def entry(self) -> Path | None:
        """The running server's registry entry."""
        return self.cluster.entry

    def start(self) -> PostgresServer:
        """Copy the cached cluster and start it (see :meth:`LocalCluster.start`)."""
        return self.cluster.start(owner_pid=self._owner_pid, detached=self._detached)

    def stop(self, *, persist: bool = False, background: bool = False) -> None:
        """Stop the server; ``persist`` keeps its data as the newest cached generation."""
        if not persist:
            self.cluster.stop()  # an immediate shutdown, and the run folder goes
            return
        self.cluster.stop(keep_data=True)  # a clean shutdown: the copy needs no recovery
        try:
            self.cluster.persist(background=background)
        finally:
            self.cluster.discard()  # (the background copy took the folder over)

    def release(self) -> None:
        """Leave the running server to its owner (an xdist controller) without stopping it."""
        self.cluster.release_ownership()

    def describe(self) -> str:
        """``local server in <run folder>`` (or from ``<bindir>`` before the start)."""
        where = (f"in {self.cluster.run_dir}" if self.cluster.run_dir is not None
                 else f"from {self.cluster.binaries.bindir}")
        return f"{self.name} server {where}"


class DockerBackend:
    """``docker``: a container this process leases (kept running while it holds templates
    or another process uses it, see :mod:`dbtest.provision._docker`)."""

    name = "docker"
    can_persist = False

    def __init__(self, image: str, cache_dir: Path) -> None:
        from dbtest.provision._docker import DockerPostgres

        self.container: DockerPostgres = DockerPostgres(image, cache_dir)

    def start(self) -> PostgresServer:
        """Start or reuse the container; wait until the server answers."""
        return self.container.start()

    def stop(self, *, persist: bool = False, background: bool = False) -> None:
        """Give the container back; ``persist`` keeps it running even without templates."""
        self.container.stop(keep_data=persist)

    def describe(self) -> str:
        """``docker container <name> (<image>)``."""
        reused = ", reused" if self.container.reused else ""
        return f"docker container {self.container.name} ({self.container.image}{reused})"


class UrlBackend:
    """``url``: an existing server; dbtest only adds (and drops) its own databases there,
    so stopping leaves it running."""

    name = "url"
    can_persist = False

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> PostgresServer:
        """Check the server answers and may create databases."""
        from dbtest.provision._url import connect_url

        return connect_url(self.url)

    def stop(self, *, persist: bool = False, background: bool = False) -> None:
        """Nothing to stop: the server is not ours."""

    def describe(self) -> str:
        """``server at <url, password masked>``."""
        return f"server at {mask_url(self.url)}"


class NoDetachedServer(ProvisionError):
    """No server of ``dbtest up --detach`` runs for this project (or it just stopped)."""


class DetachedBackend:
    """A server ``dbtest up --detach`` started for ``project_root``, joined as a session:
    registered under ``<cache>/attached/`` while used, so ``dbtest down`` refuses to pull
    it from under the run. Stopping only ends the session."""

    name = "detached"
    can_persist = False

    def __init__(self, cache_dir: Path, project_root: Path) -> None:
        self.cache_dir = cache_dir
        self.project_root = project_root
        self._attachment: Path | None = None
        self._described = "detached server (not joined)"

    def start(self) -> PostgresServer:
        """Join the running detached server; :class:`NoDetachedServer` when none runs.

        The session is registered under the lock ``dbtest down`` holds before it is used,
        so ``down`` either sees it (and refuses) or has already stopped the server; a
        server gone by the time we connect (killed, or ``down --force``) is
        :class:`NoDetachedServer` too, a server that runs but refuses us a
        :class:`ProvisionError`."""
        from dbtest.provision._detached import attach, detached_for, state_lock
        from dbtest.provision._url import connect_url

        none = NoDetachedServer(f"no server of dbtest up --detach runs for {self.project_root}"
                                f" (cache dir {self.cache_dir}). Fix: run dbtest up --detach.")
        if detached_for(self.cache_dir, self.project_root) is None:
            raise none  # the common case: no lock taken
        with state_lock(self.cache_dir):
            found = detached_for(self.cache_dir, self.project_root)
            if found is None:
                raise none
            self._attachment = attach(self.cache_dir, found.pid)
        try:
            server = connect_url(found.url)
        except ProvisionError:
            self.stop()
            if found.running():
                raise  # it runs but refuses us: say so rather than hide it
            raise none from None  # gone meanwhile
        server.details.update(pid=found.pid, detached=found.describe(), run_dir=found.run_dir)
        self._described = found.describe()
        return server

    def stop(self, *, persist: bool = False, background: bool = False) -> None:
        """End this session (the server runs on until ``dbtest down``)."""
        if self._attachment is not None:
            self._attachment.unlink(missing_ok=True)
            self._attachment = None

    def describe(self) -> str:
        """``detached, pid N, started by dbtest up at <time>``."""
        return self._described
