"""Template databases keyed by a hash of everything that defines them.

The name ``dbtest_tpl_<hash>`` carries the server's major version, the schema source's
fingerprint, the template seed sets and :data:`TEMPLATE_FORMAT`. A template is built
once under an advisory lock (parallel workers, processes and CI jobs sharing a server
build it once), verified before use, and cloned with ``CREATE DATABASE ... TEMPLATE``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbtest._databases import admin_connection, create_database, database_mark, drop_database
from dbtest._leaks import INTERNAL_SCHEMA
from dbtest._schema import SchemaSource, load_schema
from dbtest.errors import DbtestError, TemplateError

if TYPE_CHECKING:
    import psycopg

    from dbtest.provision import PostgresServer

__all__ = ["TEMPLATE_FORMAT", "TemplateCache", "TemplateInfo", "TemplateKey"]

#: bump when what dbtest puts into a template changes
TEMPLATE_FORMAT = 1
PREFIX = "dbtest_tpl_"


@dataclass(frozen=True)
class TemplateKey:
    """What a template is made of: a schema source and seed sets."""

    schema: str | None = None
    seeds: tuple[str, ...] = ()


@dataclass
class TemplateInfo:
    """A ready template database."""

    name: str
    key: TemplateKey
    built: bool  # built by this process (False: found ready)
    steps: int  # migration steps this process applied (built only)
    seconds: float
    #: why an existing template was not used (it was rebuilt), else ``None``
    reason: str | None = None
    #: time spent verifying a reused template (its mark and catalog), seconds
    verify_seconds: float = 0.0


@dataclass
class TemplateCache:
    """Finds or builds the template database for a :class:`TemplateKey` on a server."""

    server: PostgresServer
    root: Path
    seeds_dir: Path
    seed: int = 0
    #: globs of further files that shape the schema (the ``schema_inputs`` setting)
    inputs: tuple[str, ...] = ()
    #: SQLAlchemy driver of the build engine (the ``driver`` setting) and its create_engine()
    #: keyword arguments (``execution_options``, ``connect_args``)
    driver: str = "psycopg"
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    _ready: dict[TemplateKey, TemplateInfo] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def stats(self) -> list[TemplateInfo]:
        """Every template this cache handed out, in order."""
        return list(self._ready.values())

    def name_for(self, key: TemplateKey, source: SchemaSource | None) -> str:
        """The template's name: a hash of its inputs."""
        parts = [f"format={TEMPLATE_FORMAT}", f"major={self.server.major}",
                 f"schema={source.fingerprint() if source else '-'}"]
        if self.inputs:
            from dbtest._inputs import hash_files, matching_files

            files = matching_files(self.inputs, self.root)
            parts.append(f"inputs={hash_files(files, self.root)}")
        if key.seeds:
            from dbtest.seeding import seed_fingerprint

            parts.append(f"seeds={seed_fingerprint(key.seeds, self.seeds_dir, self.seed)}")
        return PREFIX + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def get(self, key: TemplateKey) -> TemplateInfo:
        """The ready template for ``key``, building it if needed (thread safe)."""
        with self._lock:
            if key not in self._ready:
                self._ready[key] = self._ensure(key)
            return self._ready[key]

    def _ensure(self, key: TemplateKey) -> TemplateInfo:
        started = time.perf_counter()
        source = load_schema(key.schema, self.root)
        name = self.name_for(key, source)
        with admin_connection(self.server.dsn) as admin:
            # the common case, a ready template, needs no lock: many processes starting at
            # once would otherwise queue to check it one by one
            checked = time.perf_counter()
            problem = self._ready_unlocked(admin, name, source)
            if problem is None:
                now = time.perf_counter()
                return TemplateInfo(name, key, False, 0, now - started,
                                    verify_seconds=now - checked)
            lock_id = build_lock_key(name)
            admin.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
            try:
                checked = time.perf_counter()
                problem = self._usable(admin, name, source)
                if problem is None:
                    now = time.perf_counter()
                    return TemplateInfo(name, key, False, 0, now - started,
                                        verify_seconds=now - checked)
                steps = self._build(admin, name, key, source)
            finally:
                admin.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
        if self.server.on_template_built is not None:
            self.server.on_template_built(name)
        reason = None if problem == _ABSENT else problem
        return TemplateInfo(name, key, True, steps, time.perf_counter() - started, reason)

    def _ready_unlocked(self, admin: Any, name: str, source: SchemaSource | None
                        ) -> str | None:
        """``None`` when ``name`` is a ready, verified template (read without the lock;
        anything else is decided under it), else why not."""
        try:
            mark = database_mark(admin, name)
        except DbtestError:
            return _ABSENT
        if mark is None or mark.get("state") != "ready":
            return _ABSENT
        problem = self._verify(name, source, mark)
        if problem is None:
            _touch(admin, name, mark)
        return problem

    def _usable(self, admin: Any, name: str, source: SchemaSource | None) -> str | None:
        """``None`` when ``name`` can be used; else why not, after dropping what stands
        in the way of a rebuild (never a database dbtest did not make)."""
        try:
            mark = database_mark(admin, name)
        except DbtestError:
            return _ABSENT
        if mark is None:
            raise TemplateError(f"database {name!r} exists but was not made by dbtest; "
                                f"refusing to use or replace it. Drop or rename it.")
        if mark.get("state") == "ready":
            problem = self._verify(name, source, mark)
            if problem is None:
                _touch(admin, name, mark)
                return None
            drop_database(admin, name)  # never use a wrong template: rebuild it
            return problem
        drop_database(admin, name)  # a half-built one from a crashed run
        return _ABSENT

    def _verify(self, name: str, source: SchemaSource | None, mark: dict[str, Any]
                ) -> str | None:
        """Why the template ``name`` must not be used, or ``None``: what the source says
        now against what the mark recorded at build time (no connection), then the
        template's catalog against the hash in the mark, and the source's own check."""
        from sqlalchemy import create_engine

        expect = source.expectation() if source is not None else None
        if "expect" in mark and mark["expect"] != expect:
            what = "the Alembic heads" if str(expect).startswith("heads") else \
                "the tables and columns the schema source defines"
            return f"{what} differ from what the template was built with"
        if "catalog" not in mark and (source is None or not source.verifies):
            return None
        engine = create_engine(self.server.url_for(name, self.driver), poolclass=_null_pool(),
                               **self.engine_kwargs)
        try:
            with engine.connect() as conn:
                if "catalog" in mark and catalog_hash(conn) != mark["catalog"]:
                    return "its tables or columns changed after it was built"
                return source.verify(conn) if source is not None and source.verifies \
                    else None
        finally:
            engine.dispose()

    def _build(self, admin: Any, name: str, key: TemplateKey,
               source: SchemaSource | None) -> int:
        from sqlalchemy import create_engine

        building = name + "_build"
        try:
            if database_mark(admin, building) is not None:
                drop_database(admin, building)
        except DbtestError:
            pass
        create_database(admin, building, purpose="template", mark={"state": "building"},
                        strategy=None)
        engine = create_engine(self.server.url_for(building, self.driver),
                               poolclass=_null_pool(), **self.engine_kwargs)
        steps = 0
        try:
            with engine.begin() as conn:
                if source is not None:
                    steps = source.apply(conn)
                if key.seeds:
                    from dbtest.seeding import load_seeds

                    load_seeds(conn, key.seeds, self.seeds_dir, seed=self.seed)
            with engine.connect() as conn:
                problem = source.verify(conn) if source is not None else None
                catalog = catalog_hash(conn)
            if problem:
                assert source is not None
                raise TemplateError(f"template for {source.spec!r} failed verification "
                                    f"after building: {problem}")
        except BaseException:
            engine.dispose()
            drop_database(admin, building)
            raise
        engine.dispose()
        from psycopg import sql

        drop_database_if_marked(admin, name)
        admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(building), sql.Identifier(name)))
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))
        from dbtest._databases import mark_database

        mark_database(admin, name, purpose="template", mark={
            "state": "ready", "schema": key.schema, "seeds": list(key.seeds),
            "steps": steps, "used": time.time(), "catalog": catalog,
            "expect": source.expectation() if source is not None else None})
        return steps

    def clone(self, template: str, name: str, purpose: str) -> str:
        """Create ``name`` as a copy of ``template``."""
        with admin_connection(self.server.dsn) as admin:
            create_database(admin, name, purpose=purpose, template=template,
                            strategy=copy_strategy(self.server, admin))
        return name


#: the reason :meth:`TemplateCache._usable` gives when there is no template to use yet
_ABSENT = "absent"

#: the tables and columns (with types) of a database's user schemas
_CATALOG = f"""
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '{INTERNAL_SCHEMA}')
  AND left(n.nspname, 3) <> 'pg_'
ORDER BY 1, 2, 3
"""


def catalog_hash(connection: Any) -> str:
    """A hash of the tables, views and columns (with types) of a database."""
    rows = connection.exec_driver_sql(_CATALOG).all()
    return hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest()[:16]


def build_lock_key(name: str) -> int:
    """The advisory lock key held while template ``name`` is checked or built (the
    janitor leaves ``<name>_build`` alone while it is held)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _touch(admin: Any, name: str, mark: dict[str, Any]) -> None:
    """Record when a template was last used (``dbtest clean`` drops long-unused ones)."""
    from dbtest._databases import mark_database

    if time.time() - float(mark.get("used", 0)) > 3600:  # one write an hour is plenty
        extra = {k: v for k, v in mark.items() if k not in ("purpose", "owner", "pid")}
        mark_database(admin, name, purpose="template", mark={**extra, "used": time.time()})


def drop_database_if_marked(admin: Any, name: str) -> None:
    """Drop ``name`` when it exists and is dbtest's (else leave it, or refuse)."""
    try:
        mark = database_mark(admin, name)
    except DbtestError:
        return
    if mark is not None:
        drop_database(admin, name)


def copy_strategy(server: PostgresServer, admin: psycopg.Connection[Any] | None = None
                  ) -> str | None:
    """The ``CREATE DATABASE ... STRATEGY`` for clones on *server* (None: the default).

    FILE_COPY is cheaper than WAL_LOG for small templates (12 vs 17 ms for 30 small tables
    here), but it checkpoints, which is cheap only with fsync off: true of every server
    dbtest starts, and asked of any other (through ``admin``) once, e.g. a detached dbtest
    server given as a URL, or a CI service started with ``-c fsync=off``.
    """
    if server.backend in ("local", "embedded"):
        return "file_copy"
    if admin is None or server.version_num < 150000:  # STRATEGY is new in PostgreSQL 15
        return None
    known = _FSYNC_OFF.get(server.dsn)
    if known is None:
        import psycopg

        try:
            row = admin.execute("SELECT current_setting('fsync') = 'off'").fetchone()
        except psycopg.Error:
            return None  # asked inside a failed transaction: the default, ask again later
        known = _FSYNC_OFF[server.dsn] = bool(row and row[0])
    return "file_copy" if known else None


#: whether each server (by DSN) runs with fsync off, asked once per process
_FSYNC_OFF: dict[str, bool] = {}


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def template_names(seq: Sequence[str]) -> list[str]:
    """The names in ``seq`` that look like dbtest templates."""
    return [n for n in seq if n.startswith(PREFIX)]
