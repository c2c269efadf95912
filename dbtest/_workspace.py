"""`Workspace`: the server and databases one test process uses.

It starts (or joins) the server on first use, builds templates through
:class:`~dbtest._templates.TemplateCache`, gives each (process, template) a worker
database cloned from the template, keeps pools of fresh databases, and cleans up all
of it on :meth:`close`. It is plain Python; the pytest fixtures are thin fronts over it.

From the server's start to :meth:`close` it holds a :class:`~dbtest._liveness.RunLease`
(an advisory lock on its admin connection, keyed by a random run token written into the
mark of every worker and fresh database it creates), so other runs' janitors, on any
host, leave its databases alone exactly while it lives. Its clones, drops and janitor
work go through one admin connection of their own (reopened if an error ends it); at
the start it checks the server's connection budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtest._build import async_kwargs, engine_kwargs
from dbtest._databases import admin_connection, create_database, drop_database
from dbtest._templates import TemplateCache, TemplateKey

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dbtest._liveness import RunLease
    from dbtest._pool import FreshDatabasePool
    from dbtest.provision import PostgresServer, Provisioner
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
    #: create_engine() keyword arguments from the settings (execution_options, connect_args)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    #: run at the start of each test with ``reset_sequences`` (see :mod:`dbtest._sequences`)
    sequence_reset: str | None = None
    _engine: Engine | None = None
    _async_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = \
        field(default_factory=weakref.WeakKeyDictionary)

    @property
    def engine(self) -> Engine:
        """A pooled sync engine on this database."""
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.url, **self.engine_kwargs)
        return self._engine

    def async_engine(self) -> AsyncEngine:
        """A pooled async engine for the running event loop (asyncpg connections belong to
        the loop that opened them, so each loop gets its own pool)."""
        from sqlalchemy.ext.asyncio import create_async_engine

        loop = asyncio.get_running_loop()
        engine = self._async_engines.get(loop)
        if engine is None:
            from dbtest.errors import require_extra

            if "+asyncpg" in self.async_url:
                require_extra("asyncpg", "async", "an async engine on the worker database")
            engine = create_async_engine(self.async_url, **async_kwargs(self.engine_kwargs))
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
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """A sync engine on this database, disposed after the test."""
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.url, **self.engine_kwargs)
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class Workspace:
    """Server, templates, worker databases and fresh pools of one test process."""

    def __init__(self, settings: Settings, *, worker: str = "main",
                 run_id: str | None = None, server: PostgresServer | None = None,
                 shared_run: str | None = None, workers: int = 1,
                 owner_pid: int | None = None) -> None:
        self.settings = settings
        #: the process that owns a shared server (the xdist controller)
        self.owner_pid = owner_pid
        #: processes of this run sharing the server (xdist workers), for the budget check
        self.workers = workers
        self._lease: RunLease | None = None
        self._admin_conn: psycopg.Connection[Any] | None = None
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
        #: called first in :meth:`close`, last registered first
        self.on_close: list[Callable[[], None]] = []
        #: called after a worker database was replaced (e.g. app engines drop their pools)
        self.on_reset: list[Callable[[], None]] = []

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
                    from dbtest.provision import current_owner, join_or_start

                    self._server, self._provisioner = join_or_start(
                        self.settings, self.shared_run, self.owner_pid or current_owner())
                else:
                    from dbtest.provision import Provisioner

                    self._provisioner = Provisioner(self.settings)
                    self._server = self._provisioner.start()
                self._take_lease(self._server)
            return self._server

    def _take_lease(self, server: PostgresServer) -> None:
        """Hold this run's liveness lock, check the connection budget, then drop what
        dead runs left (on servers that outlive runs)."""
        from dbtest._liveness import RunLease, check_budget

        try:
            self._lease = RunLease(server.dsn)
            # xdist workers share a url server or the run's shared local one; a docker
            # or local server of this process's own serves it alone
            shared = self.shared_run is not None or server.backend == "url"
            check_budget(self._lease.conn, self.workers if shared else 1, server.dsn)
        except BaseException:
            if self._lease is not None:
                self._lease.close()
                self._lease = None
            self._server = None
            if self._provisioner is not None:
                self._provisioner.stop()
            raise
        if server.backend in ("url", "docker"):
            self._reap_databases()

    @property
    def run_token(self) -> str | None:
        """This run's token (in the marks of its databases) while the server is up."""
        return self._lease.token if self._lease is not None else None

    def _admin_connection(self) -> psycopg.Connection[Any] | None:
        """The run's admin connection while it holds a lease (opened, or reopened after an
        error ended it, on demand; shared with the pools' threads)."""
        from dbtest._databases import admin_connect

        with self._lock:
            if self._lease is None or self._server is None:
                return None
            if self._admin_conn is None or self._admin_conn.closed:
                # named like the lease: pg_stat_activity shows which run does what
                self._admin_conn = admin_connect(self._server.dsn,
                                                 application_name=f"dbtest run {self._lease.token}")
            return self._admin_conn

    @contextlib.contextmanager
    def admin(self) -> Iterator[psycopg.Connection[Any]]:
        """The run's admin connection (shared: no transaction of your own on it), or a new
        one for this operation."""
        conn = self._admin_connection()
        if conn is not None:
            yield conn
        else:
            assert self._server is not None
            with admin_connection(self._server.dsn) as admin:
                yield admin

    def _reap_databases(self) -> None:
        """Drop worker and fresh databases that dead runs left on a shared server."""
        from dbtest._janitor import drop_stale, stale_databases

        with contextlib.suppress(Exception), self.admin() as admin:
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
                from dbtest._build import run_setup

                run_setup(self.settings)  # in-process app init, on build and reuse alike
                self._templates = TemplateCache(self.server, self.settings.root,
                                                self.settings.seeds, seed=self.settings.seed or 0,
                                                inputs=self.settings.schema_inputs,
                                                driver=self.settings.driver,
                                                engine_kwargs=engine_kwargs(self.settings))
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
                found = WorkerDatabase(name, self.server.url_for(name, self.settings.driver),
                                       self.server.url_for(name, self.settings.async_driver),
                                       events, engine_kwargs(self.settings))
                if self.settings.reset_sequences:  # the template's state, read once
                    from dbtest._leaks import INTERNAL_SCHEMA
                    from dbtest._sequences import restore_statement

                    found.sequence_reset = restore_statement(found.engine, INTERNAL_SCHEMA)
                self._workers[key] = found
            return found

    def existing_worker(self, key: TemplateKey) -> WorkerDatabase | None:
        """This process's database for ``key`` if it was made already (else ``None``)."""
        with self._lock:
            return self._workers.get(key)

    def _clone_with_leak_check(self, template: str, name: str) -> bool:
        """Clone ``template`` as ``name`` with the leak record; whether the DDL event
        triggers are installed (see :func:`dbtest._leaks.install`)."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        from dbtest import _leaks as leaks

        self._clone(template, name, "worker")
        engine = create_engine(self.server.url_for(name), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                return leaks.install(conn)
        except BaseException:
            with self.admin() as admin:
                drop_database(admin, name)
            raise
        finally:
            engine.dispose()

    def _clone(self, template: str, name: str, purpose: str) -> None:
        from dbtest._templates import copy_strategy

        with self.admin() as admin:
            create_database(admin, name, purpose=purpose, template=template,
                            strategy=copy_strategy(self.server, admin),
                            mark=self._lease.mark if self._lease is not None else None)

    def leaked_tables(self, key: TemplateKey) -> list[str]:
        """Tables with committed changes in the worker database since it was cloned."""
        from dbtest import _leaks as leaks

        worker = self.worker_database(key)
        with worker.engine.connect() as conn:
            return leaks.touched_tables(conn, ddl_events=worker.ddl_events)

    def reset_worker_database(self, key: TemplateKey) -> None:
        """Replace the worker database by a new clone (after data leaked into it)."""
        with self._lock:
            worker = self._workers[key]
            worker.dispose()
            with self.admin() as admin:
                drop_database(admin, worker.name, wait=1.0)
            worker.ddl_events = self._clone_with_leak_check(self.templates.get(key).name,
                                                            worker.name)
        for callback in self.on_reset:
            callback()

    # -- fresh databases ------------------------------------------------------------------
    def fresh_database(self, key: TemplateKey) -> FreshDatabase:
        """A new database cloned from ``key``'s template, from the pool."""
        from dbtest._pool import FreshDatabasePool
        from dbtest._templates import copy_strategy

        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                template = self.templates.get(key).name
                admin = self._admin_connection()
                pool = FreshDatabasePool(self.server, template, self._db_name("f", template),
                                         size=self.settings.pool_size,
                                         strategy=copy_strategy(self.server, admin),
                                         admin=admin,
                                         mark=self._lease.mark if self._lease else None)
                self._pools[key] = pool
        name = pool.acquire()
        return FreshDatabase(name, self.server.url_for(name, self.settings.driver),
                             self.server.url_for(name, self.settings.async_driver),
                             self.server.dsn_for(name), engine_kwargs(self.settings))

    def release_fresh(self, key: TemplateKey, db: FreshDatabase) -> None:
        """Drop a fresh database in the background."""
        db.dispose()
        self._pools[key].release(db.name)

    # -- the end --------------------------------------------------------------------------
    def close(self) -> None:
        """Drop every database this workspace made and stop the server it started."""
        if self._server is None:
            return
        for undo in reversed(self.on_close):  # e.g. app engines pointed at our databases
            with contextlib.suppress(Exception):
                undo()
        self.on_close.clear()
        backend = self._provisioner.backend if self._provisioner is not None else None
        # a local server of our own keeps its data (for the next run) only when it built a
        # template; one that is not kept takes its databases with it
        persist = bool(self.templates_built) and backend is not None and backend.can_persist
        throwaway = backend is not None and backend.can_persist and not persist
        for pool in self._pools.values():
            pool.close(drop=not throwaway)
        self._pools.clear()
        for worker in self._workers.values():
            worker.dispose()
        if not throwaway:
            with contextlib.suppress(Exception), self.admin() as admin:
                for worker in self._workers.values():
                    with contextlib.suppress(Exception):
                        # our own database: its pooled connections are ours, no waiting
                        drop_database(admin, worker.name, wait=0.0)
                if persist:
                    # the cached cluster is copied at every start (each database adds
                    # ~7 MB): keep only the most recently used templates in it
                    from dbtest._janitor import drop_stale, stale_databases

                    drop_stale(admin, stale_databases(admin, max_age_days=0,
                                                      keep=CACHED_TEMPLATES))
        self._workers.clear()
        if self._admin_conn is not None:
            self._admin_conn.close()
            self._admin_conn = None
        if self._lease is not None:  # after the drops: what is left is now fair game
            self._lease.close()
            self._lease = None
        if self._provisioner is not None:
            if persist:
                # the run's results are in: a failed copy only costs the next run a rebuild
                with contextlib.suppress(Exception):
                    self._provisioner.stop(persist=True, background=True)
            self._provisioner.stop()  # (once stopped, a no-op)
        self._server = None


def worker_id(workerinput: dict[str, Any] | None = None) -> str:
    """The pytest-xdist worker id (``gw0``...) or ``main``.

    Read from the worker's own ``config.workerinput``: the environment variable is
    inherited by pytest processes a test starts, which are not workers.
    """
    return str(workerinput["workerid"]) if workerinput else "main"
