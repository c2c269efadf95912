"""factory-boy, bound to the current test's session, with async and bulk paths.

* :func:`bind_session` (called by the ``db`` and ``async_db`` fixtures, and while seed sets
  load) binds every ``SQLAlchemyModelFactory`` whose ``Meta`` names no session to the given
  Session, and returns the finalizer that unbinds. No ``sqlalchemy_session`` boilerplate.
* ``await acreate(UserFactory, **kw)`` / ``await acreate_batch(UserFactory, n, **kw)`` for an
  ``AsyncSession`` (factory-boy cannot await): factory-boy runs inside the session's
  greenlet, so SubFactory, RelatedFactory and post-generation hooks keep working.
  :class:`AsyncFactoryMixin` adds them as classmethods.
* ``Factory.create_batch(n)`` with ``n >= BULK_THRESHOLD`` (50) on a dbtest-bound factory
  takes the bulk path: the same objects and rows as ``n`` times ``create()``, but written
  with one COPY per table (primary keys reserved from the table's sequence, or one
  ``INSERT ... RETURNING``) instead of one flush per row; the objects come back persistent
  in the session. Factories whose declarations are all order-free (constants,
  ``Sequence``, ``LazyAttribute``, ``SelfAttribute``, :class:`dbtest.fakes.Fake`,
  ``SubFactory`` of such factories, ``post_generation``) are evaluated column by column,
  which is where the speed comes from. Set ``_dbtest_bulk_threshold`` on a factory class
  to change its threshold (``None``: the default; a huge number: never bulk).

:func:`insert_rows` (``ctx.factories.rows`` in seeds) is the fastest path: the same
rows, COPYed without building ORM objects at all; it returns the primary keys.

In the bulk path objects get their primary keys when the whole batch is built: a
declaration that reads one (``LazyAttribute(lambda o: o.author.id)``) sees ``None``;
use the relationship (``o.author``) instead or keep such batches under the threshold.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dbtest.errors import ConfigError, SeedError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["BULK_THRESHOLD", "AsyncFactoryMixin", "FactoryAccess", "acreate", "acreate_batch",
           "bind_session", "bulk_create", "insert_rows", "reserve_ids", "saved_factory_state",
           "seed_factories"]

#: create_batch(n) with n at or above this takes the bulk path
BULK_THRESHOLD = 50

_OURS: weakref.WeakSet[Any] = weakref.WeakSet()  # sessions dbtest bound
_ASYNC: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # sync -> async
_COLLECTING: contextvars.ContextVar[Any] = contextvars.ContextVar("dbtest_collect",
                                                                  default=None)
_PATCHED: dict[str, Any] = {}


def _base() -> type:
    from dbtest.errors import require_extra

    alchemy = require_extra("factory.alchemy", "factories", "dbtest factories")
    return alchemy.SQLAlchemyModelFactory  # type: ignore[no-any-return]


def all_factories() -> list[type]:
    """Every ``SQLAlchemyModelFactory`` subclass defined so far (walked at call time)."""
    out: list[type] = []
    stack: list[type] = list(_base().__subclasses__())
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def bind_session(session: Session | AsyncSession, *, seed: int | None = None
                 ) -> Callable[[], None]:
    """Bind every session-less factory to ``session`` (a Session or AsyncSession).

    Returns the finalizer that restores the previous bindings. With ``seed`` (the test's
    seed) factory-boy's and Faker's random state and dbtest fakes are reseeded and every
    factory sequence restarts, so a test makes the same rows whatever ran before it.
    polyfactory's ``SQLAlchemyFactory`` classes are bound and seeded the same way
    (:mod:`dbtest.factories._polyfactory`).
    """
    from dbtest.factories._polyfactory import bind_polyfactory

    unbind_poly = bind_polyfactory(session, seed=seed)
    # Until something imports factory-boy no factory-boy factory exists, so there is
    # nothing to bind: then this imports nothing (factory-boy imports Faker, ~1 s).
    if "factory" not in sys.modules:
        return unbind_poly or _nothing
    _install_patches()
    target: Any = getattr(session, "sync_session", session)
    if target is not session:
        _ASYNC[target] = session
    previous: dict[type, Any] = {}
    for cls in all_factories():
        meta: Any = getattr(cls, "_meta", None)
        if meta is None or getattr(meta, "sqlalchemy_session_factory", None) is not None:
            continue
        current = meta.sqlalchemy_session
        if current is not None and current not in _OURS:
            continue  # the factory's Meta names its own session: leave it alone
        previous[cls] = current
        meta.sqlalchemy_session = target
    _OURS.add(target)
    if seed is not None:
        seed_factories(seed)
        reset_sequences()

    def unbind() -> None:
        for cls in all_factories():  # also classes defined while bound (they inherited it)
            meta: Any = getattr(cls, "_meta", None)
            if meta is not None and meta.sqlalchemy_session is target:
                meta.sqlalchemy_session = previous.get(cls)
        if unbind_poly is not None:
            unbind_poly()

    return unbind


def _nothing() -> None:
    pass


def seed_factories(seed: int) -> None:
    """Reseed factory-boy's random generator (which ``factory.Faker`` and fuzzy use) and
    the :class:`dbtest.fakes.Fake` values."""
    import factory.random

    from dbtest import fakes

    factory.random.reseed_random(seed)  # type: ignore[no-untyped-call]
    fakes.reseed(seed)


def _counter_owners() -> list[type]:
    return [cls for cls in all_factories() if not cls._meta.abstract  # type: ignore[attr-defined]
            and cls._meta.counter_reference is cls._meta]  # type: ignore[attr-defined]


def reset_sequences(start: int | None = None) -> None:
    """Restart every factory's sequence (at ``start``, default each factory's own start)."""
    for cls in _counter_owners():
        cls.reset_sequence(start)  # type: ignore[attr-defined]


@contextlib.contextmanager
def saved_factory_state(start: int) -> Iterator[None]:
    """Sequences from ``start`` inside the block; sequences and random state restored after
    (seed sets must neither depend on nor disturb the tests around them)."""
    import factory.random

    from dbtest import fakes

    state = factory.random.get_random_state()  # type: ignore[no-untyped-call]
    fake_seed = fakes.default().seed
    saved: dict[type, int | None] = {}
    for cls in _counter_owners():
        counter = cls._meta._counter  # type: ignore[attr-defined]
        saved[cls] = counter.seq if counter is not None else None
        cls.reset_sequence(start)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        factory.random.set_random_state(state)  # type: ignore[no-untyped-call]
        fakes.reseed(fake_seed)
        for cls, seq in saved.items():
            cls.reset_sequence(seq)  # type: ignore[attr-defined]


# -- patches on SQLAlchemyModelFactory (installed once, transparent outside dbtest) --------
def _install_patches() -> None:
    if _PATCHED:
        return
    base: Any = _base()
    _PATCHED["_save"] = base._save.__func__
    _PATCHED["create_batch"] = base.create_batch.__func__
    base._save = classmethod(_patched_save)
    base.create_batch = classmethod(_patched_create_batch)


def _patched_save(cls: Any, model_class: Any, session: Any, args: Any, kwargs: Any, /) -> Any:
    collector = _COLLECTING.get()
    if collector is not None and session is collector.session:
        obj = model_class(*args, **kwargs)
        collector.objects.append(obj)
        return obj
    from sqlalchemy.exc import MissingGreenlet

    try:
        return _PATCHED["_save"](cls, model_class, session, args, kwargs)
    except MissingGreenlet:
        if session in _ASYNC:
            raise ConfigError(f"{cls.__name__}.create() cannot flush through an AsyncSession "
                              f"(factory-boy does not await); use `await dbtest.factories."
                              f"acreate({cls.__name__}, ...)` or acreate_batch") from None
        raise


def _threshold(cls: Any) -> int:
    value = getattr(cls, "_dbtest_bulk_threshold", None)
    return BULK_THRESHOLD if value is None else int(value)


def _patched_create_batch(cls: Any, size: int, /, **kwargs: Any) -> list[Any]:
    session = cls._meta.sqlalchemy_session
    if size >= _threshold(cls) and session is not None and session in _OURS \
            and not cls._meta.sqlalchemy_get_or_create and _can_do_io(session):
        return bulk_create(cls, size, **kwargs)
    return _PATCHED["create_batch"](cls, size, **kwargs)  # type: ignore[no-any-return]


def _can_do_io(session: Any) -> bool:
    if session not in _ASYNC:
        return True
    from sqlalchemy.util import concurrency

    return bool(concurrency.in_greenlet())  # inside run_sync: acreate_batch


# -- the bulk path -------------------------------------------------------------------------
class _Collector:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.objects: list[Any] = []


def bulk_create(factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
    """``factory_cls.create_batch(size, **kwargs)`` through the bulk path, whatever the size.

    The objects are persistent in the factory's session, with primary keys.
    """
    from dbtest.factories._columnar import columnar_build
    from dbtest.factories._persist import persist

    session = factory_cls._meta.sqlalchemy_session
    if session is None:
        raise ConfigError(f"{factory_cls.__name__} has no session: use it in a test with the db "
                          f"fixture, inside a seed set, or call dbtest.factories.bind_session")
    if session.new or session.dirty:
        session.flush()  # what the batch refers to must have its keys first
    collector = _Collector(session)
    token = _COLLECTING.set(collector)
    try:
        objects = columnar_build(factory_cls, size, kwargs, collector.objects)
        if objects is None:  # not order-free: factory-boy evaluates row by row
            objects = [factory_cls.create(**kwargs) for _ in range(size)]
    finally:
        _COLLECTING.reset(token)
    persist(session, collector.objects)
    if factory_cls._meta.sqlalchemy_session_persistence == "commit":
        session.commit()  # what create() would have done after each row
    return objects


def insert_rows(factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
    """The fastest factory path: ``size`` rows made from the factory's declarations and
    COPYed, without ORM objects; returns their primary keys.

    For order-free factories without SubFactory or post-generation declarations (see the
    module doc) no object is built at all; other factories go through :func:`bulk_create`.
    The rows equal what ``create_batch`` would write.
    """
    from sqlalchemy import Integer, inspect

    from dbtest.bulk import bulk_insert
    from dbtest.factories._columnar import columnar_rows

    session = factory_cls._meta.sqlalchemy_session
    rows = columnar_rows(factory_cls, size, kwargs) if session is not None else None
    mapper = inspect(factory_cls._meta.model)
    keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
    if rows is None:
        return [tuple(getattr(o, k) for k in keys) if len(keys) > 1 else getattr(o, keys[0])
                for o in bulk_create(factory_cls, size, **kwargs)]
    _relationships_to_columns(mapper, rows, factory_cls.__name__)
    column = mapper.primary_key[0]
    if len(keys) == 1 and isinstance(column.type, Integer) and \
            any(row.get(keys[0]) is None for row in rows):
        missing = [row for row in rows if row.get(keys[0]) is None]
        for row, value in zip(missing, reserve_ids(session, mapper.local_table, len(missing),
                                                   column.name), strict=True):
            row[keys[0]] = value
    try:
        bulk_insert(session, factory_cls._meta.model, rows)
    except SeedError as exc:
        raise SeedError(f"{factory_cls.__name__} rows: {exc}") from None
    if len(keys) == 1:
        return [row.get(keys[0]) for row in rows]
    return [tuple(row.get(k) for k in keys) for row in rows]


def _relationships_to_columns(mapper: Any, rows: list[dict[str, Any]], name: str) -> None:
    # rows hold relationship values (role=None, author=alice): write their foreign keys
    from sqlalchemy.orm import RelationshipDirection

    for rel in mapper.relationships:
        if not rows or rel.key not in rows[0]:
            continue
        if rel.direction is not RelationshipDirection.MANYTOONE:
            raise SeedError(f"{name} rows: {rel.key!r} is a collection; use create_batch")
        pairs = [(mapper.get_property_by_column(local).key,
                  rel.mapper.get_property_by_column(remote).key)
                 for local, remote in rel.local_remote_pairs]
        for row in rows:
            parent = row.pop(rel.key)
            for local_key, remote_key in pairs:
                if parent is not None:
                    row[local_key] = getattr(parent, remote_key)
                else:
                    row.setdefault(local_key, None)


def reserve_ids(session_or_connection: Any, table_or_model: Any, count: int,
                column: str = "id") -> list[int]:
    """``count`` fresh values of the sequence behind ``column`` (serial or identity)."""
    from sqlalchemy import text

    from dbtest.bulk._plan import resolve_target

    target = resolve_target(table_or_model)
    conn = session_or_connection
    if hasattr(conn, "connection") and callable(conn.connection):
        conn = conn.connection()
    seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                       {"t": target.regclass, "c": column}).scalar()
    if seq is None:
        raise SeedError(f"{target.display}.{column} has no sequence (not serial or identity); "
                        f"give its values yourself")
    rows = conn.execute(text("SELECT nextval(CAST(:s AS regclass)) "
                             "FROM generate_series(1, :n)"), {"s": seq, "n": count})
    return list(rows.scalars().all())


# -- async ----------------------------------------------------------------------------------
def _async_session(factory_cls: Any) -> Any:
    sync = factory_cls._meta.sqlalchemy_session
    found = _ASYNC.get(sync) if sync is not None else None
    if found is None:
        what = "is bound to a sync Session: use create()" if sync is not None else \
            "has no session: request the async_db fixture or call bind_session(async_session)"
        raise ConfigError(f"{factory_cls.__name__} {what}")
    return found


async def acreate(factory_cls: Any, **kwargs: Any) -> Any:
    """``factory_cls.create(**kwargs)`` for a factory bound to an ``AsyncSession``."""
    session = _async_session(factory_cls)
    return await session.run_sync(lambda _sync: factory_cls.create(**kwargs))


async def acreate_batch(factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
    """``factory_cls.create_batch(size, **kwargs)`` for an ``AsyncSession`` (bulk path at or
    above the threshold: asyncpg ``copy_records_to_table`` / psycopg COPY)."""
    session = _async_session(factory_cls)
    return await session.run_sync(  # type: ignore[no-any-return]
        lambda _sync: factory_cls.create_batch(size, **kwargs))


class AsyncFactoryMixin:
    """Adds ``await Factory.acreate(**kw)`` and ``await Factory.acreate_batch(n, **kw)``:
    ``class UserFactory(AsyncFactoryMixin, SQLAlchemyModelFactory): ...``"""

    @classmethod
    async def acreate(cls, **kwargs: Any) -> Any:
        return await acreate(cls, **kwargs)

    @classmethod
    async def acreate_batch(cls, size: int, **kwargs: Any) -> list[Any]:
        return await acreate_batch(cls, size, **kwargs)


class FactoryAccess:
    """``ctx.factories`` in a seed set: factories by class name, bound to the set's session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        found = [c for c in all_factories() if c.__name__ == name
                 and not c._meta.abstract]  # type: ignore[attr-defined]
        if len(found) != 1:
            problem = "is not defined (import its module in the seed)" if not found else \
                f"is ambiguous ({', '.join(c.__module__ for c in found)})"
            raise SeedError(f"factory {name!r} {problem}; or use the class itself")
        return found[0]

    def create_batch(self, factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
        """``factory_cls.create_batch`` (bulk at or above the threshold)."""
        return factory_cls.create_batch(size, **kwargs)  # type: ignore[no-any-return]

    def bulk(self, factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
        """The bulk path whatever ``size``."""
        return bulk_create(factory_cls, size, **kwargs)

    def rows(self, factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
        """:func:`insert_rows`: rows without ORM objects, returns primary keys."""
        return insert_rows(factory_cls, size, **kwargs)
