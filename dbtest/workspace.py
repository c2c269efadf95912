"""`Workspace`: the server and databases one test process uses.

It starts (or joins) the server on first use, builds templates through
:class:`~dbtest.templates.TemplateCache`, gives each (process, template) a worker
database cloned from the template, keeps pools of fresh databases, and cleans up all
of it on :meth:`close`. It is plain Python; the pytest fixtures are thin fronts over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtest.databases import admin_connection, drop_database
from dbtest.templates import TemplateCache, TemplateKey

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dbtest.pool import FreshDatabasePool
    from dbtest.provision import Provisioner
    from dbtest.provision.server import PostgresServer
    from dbtest.settings import Settings

__all__ = ["CACHED_TEMPLATES", "FreshDatabase", "WorkerDatabase", "Workspace"]

#: templates kept in a local cluster's cache between runs
CACHED_TEMPLATES = 3


@dataclass
class WorkerDatabase:
    """This process's long-lived database for one template (savepoint isolation)."""

    name: str
    url: str
    async_url: str
    #: whether the DDL event triggers of leak detection are installed (else: fingerprint)
    ddl_events: bool = True
    _engine: Engine | None = None
    _async_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = \
        field(default_factory=weakref.WeakKeyDictionary)

    @property
    def engine(self) -> Engine:
        """A pooled sync engine on this database."""
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.url)
        return self._engine

    def async_engine(self) -> AsyncEngine:
        """A pooled async engine for the running event loop (asyncpg connections belong to
        the loop that opened them, so each loop gets its own pool)."""
        from sqlalchemy.ext.asyncio import create_async_engine

        loop = asyncio.get_running_loop()
        engine = self._async_engines.get(loop)
        if engine is None:
            from dbtest.errors import require_extra

            require_extra("asyncpg", "async", "an async engine on the worker database")
            engine = create_async_engine(self.async_url)
            self._async_engines[loop] = engine
        return engine

    def dispose(self) -> None:
        """Close every pooled connection (sync; async pools are dropped)."""
        if self._engine is not None:
            self._engine.dispose()
        for engine in list(self._async_engines.values()):
            # the loop that owns these connections may be gone; let the server close them
            engine.sync_engine.dispose(close=False)
        self._async_engines.clear()


@dataclass
class FreshDatabase:
    """A database of a test's own, cloned from the template and dropped afterwards."""

    name: str
    url: str
    async_url: str
    dsn: str
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """A sync engine on this database, disposed after the test."""
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.url)
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class Workspace:
    """Server, templates, worker databases and fresh pools of one test process."""

    def __init__(self, settings: Settings, *, worker: str = "main",
                 run_id: str | None = None, server: PostgresServer | None = None,
                 shared_run: str | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.run_id = run_id or secrets.token_hex(4)
        self._server = server
        self._provisioner: Provisioner | None = None
        self._templates: TemplateCache | None = None
        self._workers: dict[TemplateKey, WorkerDatabase] = {}
        self._pools: dict[TemplateKey, FreshDatabasePool] = {}
        self._lock = threading.RLock()
        self.templates_built: list[str] = []
        #: the xdist run whose shared server this workspace joins (None: a server of its own)
        self.shared_run = shared_run

    # -- server and templates -------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def server(self) -> PostgresServer:
        """The server, started on first use."""
        with self._lock:
            if self._server is None:
                if self.shared_run is not None:
                    from dbtest.provision.shared import current_owner, join_or_start

                    self._server = join_or_start(self.settings, self.shared_run,
                                                 current_owner())
                else:
                    from dbtest.provision import Provisioner

                    self._provisioner = Provisioner(self.settings)
                    self._server = self._provisioner.start()
                    if self._server.backend in ("url", "docker"):
                        self._reap_databases()
            return self._server

    def _reap_databases(self) -> None:
        """Drop worker and fresh databases that crashed runs left on a shared server."""
        from dbtest.janitor import drop_stale, stale_databases

        assert self._server is not None
        with contextlib.suppress(Exception), admin_connection(self._server.dsn) as admin:
            drop_stale(admin, stale_databases(admin, templates=False))

    @property
    def templates(self) -> TemplateCache:
        with self._lock:
            if self._templates is None:
                server, before = self.server, self.server.on_template_built

                def built(name: str) -> None:
                    self.templates_built.append(name)
                    if before is not None:
                        before(name)

                server.on_template_built = built
                self._templates = TemplateCache(self.server, self.settings.root,
                                                self.settings.seeds, seed=self.settings.seed or 0,
                                                inputs=self.settings.schema_inputs)
            return self._templates

    def default_key(self) -> TemplateKey:
        return TemplateKey(self.settings.schema, tuple(self.settings.template_seeds))

    def key_for(self, schema: str | None = None, seeds: tuple[str, ...] = ()) -> TemplateKey:
        """The template key of a test, from its marker's ``schema`` and ``seeds``."""
        return TemplateKey(schema if schema is not None else self.settings.schema,
                           tuple(dict.fromkeys((*self.settings.template_seeds, *seeds))))

    def _db_name(self, kind: str, template: str) -> str:
        return f"dbtest_{kind}_{self.run_id}_{self.worker}_{template[-8:]}"

    # -- savepoint isolation: one long-lived database per template -------------------------
    def worker_database(self, key: TemplateKey) -> WorkerDatabase:
        """This process's database for ``key`` (cloned from the template on first use)."""
        with self._lock:
            found = self._workers.get(key)
            if found is None:
                template = self.templates.get(key).name
                name = self._db_name("w", template)
                events = self._clone_with_leak_check(template, name)
                found = WorkerDatabase(name, self.server.url_for(name),
                                       self.server.url_for(name, "asyncpg"), events)
                self._workers[key] = found
            return found

    def existing_worker(self, key: TemplateKey) -> WorkerDatabase | None:
        """This process's database for ``key`` if it was made already (else ``None``)."""
        with self._lock:
            return self._workers.get(key)

    def _clone_with_leak_check(self, template: str, name: str) -> bool:
        """Clone ``template`` as ``name`` with the leak record; whether the DDL event
        triggers are installed (see :func:`dbtest.leaks.install`)."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        from dbtest import leaks

        self.templates.clone(template, name, purpose="worker")
        engine = create_engine(self.server.url_for(name), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                return leaks.install(conn)
        except BaseException:
            with admin_connection(self.server.dsn) as admin:
                drop_database(admin, name)
            raise
        finally:
            engine.dispose()

    def leaked_tables(self, key: TemplateKey) -> list[str]:
        """Tables with committed changes in the worker database since it was cloned."""
        from dbtest import leaks

        worker = self.worker_database(key)
        with worker.engine.connect() as conn:
            return leaks.touched_tables(conn, ddl_events=worker.ddl_events)

    def reset_worker_database(self, key: TemplateKey) -> None:
        """Replace the worker database by a new clone (after data leaked into it)."""
        with self._lock:
            worker = self._workers[key]
            worker.dispose()
            with admin_connection(self.server.dsn) as admin:
                drop_database(admin, worker.name, wait=1.0)
            worker.ddl_events = self._clone_with_leak_check(self.templates.get(key).name,
                                                            worker.name)

    # -- fresh databases ------------------------------------------------------------------
    def fresh_database(self, key: TemplateKey) -> FreshDatabase:
        """A new database cloned from ``key``'s template, from the pool."""
        from dbtest.pool import FreshDatabasePool
        from dbtest.templates import _strategy

        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                template = self.templates.get(key).name
                pool = FreshDatabasePool(self.server, template, self._db_name("f", template),
                                         size=self.settings.pool_size,
                                         strategy=_strategy(self.server))
                self._pools[key] = pool
        name = pool.acquire()
        return FreshDatabase(name, self.server.url_for(name),
                             self.server.url_for(name, "asyncpg"), self.server.dsn_for(name))

    def release_fresh(self, key: TemplateKey, db: FreshDatabase) -> None:
        """Drop a fresh database in the background."""
        db.dispose()
        self._pools[key].release(db.name)

    # -- the end --------------------------------------------------------------------------
    def close(self) -> None:
        """Drop every database this workspace made and stop the server it started."""
        if self._server is None:
            return
        handle = self._provisioner._handle if self._provisioner is not None else None
        persist = bool(self.templates_built) and hasattr(handle, "persist")
        # a local server of our own that is not kept takes its databases with it
        throwaway = handle is not None and hasattr(handle, "persist") and not persist
        for pool in self._pools.values():
            pool.close(drop=not throwaway)
        self._pools.clear()
        for worker in self._workers.values():
            worker.dispose()
        if not throwaway:
            with contextlib.suppress(Exception), admin_connection(self._server.dsn) as admin:
                for worker in self._workers.values():
                    with contextlib.suppress(Exception):
                        # our own database: its pooled connections are ours, no waiting
                        drop_database(admin, worker.name, wait=0.0)
                if persist:
                    # the cached cluster is copied at every start (each database adds
                    # ~7 MB): keep only the most recently used templates in it
                    from dbtest.janitor import drop_stale, stale_databases

                    drop_stale(admin, stale_databases(admin, max_age_days=0,
                                                      keep=CACHED_TEMPLATES))
        self._workers.clear()
        if self._provisioner is not None:
            if persist and handle is not None:
                handle.stop(keep_data=True)
                with contextlib.suppress(Exception):
                    handle.persist(background=True)
                handle.discard()
                self._provisioner._handle = None
            self._provisioner.stop()
        self._server = None


def worker_id(workerinput: dict[str, Any] | None = None) -> str:
    """The pytest-xdist worker id (``gw0``...) or ``main``.

    Read from the worker's own ``config.workerinput``: the environment variable is
    inherited by pytest processes a test starts, which are not workers.
    """
    return str(workerinput["workerid"]) if workerinput else "main"
