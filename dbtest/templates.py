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

from dbtest.databases import admin_connection, create_database, database_mark, drop_database
from dbtest.errors import DbtestError, TemplateError
from dbtest.schema import SchemaSource, load_schema

if TYPE_CHECKING:
    from dbtest.provision.server import PostgresServer

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
    steps: int  # migration steps applied by this process (0 when reused)
    seconds: float


@dataclass
class TemplateCache:
    """Finds or builds the template database for a :class:`TemplateKey` on a server."""

    server: PostgresServer
    root: Path
    seeds_dir: Path
    seed: int = 0
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
            if self._ready_unlocked(admin, name, source):
                return TemplateInfo(name, key, False, 0, time.perf_counter() - started)
            lock_id = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big",
                                     signed=True)
            admin.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
            try:
                if self._usable(admin, name, source):
                    return TemplateInfo(name, key, False, 0, time.perf_counter() - started)
                steps = self._build(admin, name, key, source)
            finally:
                admin.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
        if self.server.on_template_built is not None:
            self.server.on_template_built(name)
        return TemplateInfo(name, key, True, steps, time.perf_counter() - started)

    def _ready_unlocked(self, admin: Any, name: str, source: SchemaSource | None) -> bool:
        """Whether ``name`` is a ready, verified template (read without the lock; anything
        else is decided under it)."""
        try:
            mark = database_mark(admin, name)
        except DbtestError:
            return False
        if mark is None or mark.get("state") != "ready":
            return False
        if source is not None and self._verify(name, source) is not None:
            return False
        _touch(admin, name, mark)
        return True

    def _usable(self, admin: Any, name: str, source: SchemaSource | None) -> bool:
        try:
            mark = database_mark(admin, name)
        except DbtestError:
            return False  # does not exist
        if mark is None:
            raise TemplateError(f"database {name!r} exists but was not made by dbtest; "
                                f"refusing to use or replace it. Drop or rename it.")
        if mark.get("state") == "ready" and source is not None:
            problem = self._verify(name, source)
            if problem is None:
                _touch(admin, name, mark)
                return True
            # never use a wrong template: rebuild it
            drop_database(admin, name)
            return False
        if mark.get("state") == "ready":
            _touch(admin, name, mark)
            return True
        drop_database(admin, name)  # a half-built one from a crashed run
        return False

    def _verify(self, name: str, source: SchemaSource) -> str | None:
        from sqlalchemy import create_engine

        if not source.verifies:
            return None

        engine = create_engine(self.server.url_for(name), poolclass=_null_pool())
        try:
            with engine.connect() as conn:
                return source.verify(conn)
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
        engine = create_engine(self.server.url_for(building), poolclass=_null_pool())
        steps = 0
        try:
            with engine.begin() as conn:
                if source is not None:
                    steps = source.apply(conn)
                if key.seeds:
                    from dbtest.seeding import load_seeds

                    load_seeds(conn, key.seeds, self.seeds_dir, seed=self.seed)
            if source is not None:
                with engine.connect() as conn:
                    problem = source.verify(conn)
                if problem:
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
        from dbtest.databases import mark_database

        mark_database(admin, name, purpose="template", mark={
            "state": "ready", "schema": key.schema, "seeds": list(key.seeds),
            "steps": steps, "used": time.time()})
        return steps

    def clone(self, template: str, name: str, purpose: str) -> str:
        """Create ``name`` as a copy of ``template``."""
        with admin_connection(self.server.dsn) as admin:
            create_database(admin, name, purpose=purpose, template=template,
                            strategy=_strategy(self.server))
        return name


def _touch(admin: Any, name: str, mark: dict[str, Any]) -> None:
    """Record when a template was last used (``dbtest clean`` drops long-unused ones)."""
    from dbtest.databases import mark_database

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


def _strategy(server: PostgresServer) -> str | None:
    # FILE_COPY is cheaper than WAL_LOG for small templates, and its checkpoint is cheap
    # with fsync off, which holds only for servers dbtest started itself.
    return "file_copy" if server.backend in ("local", "embedded") else None


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def template_names(seq: Sequence[str]) -> list[str]:
    """The names in ``seq`` that look like dbtest templates."""
    return [n for n in seq if n.startswith(PREFIX)]
