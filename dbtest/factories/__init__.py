"""factory-boy, bound to the current test's session, with async and bulk paths.

* Binding: a ``SQLAlchemyModelFactory`` whose ``Meta`` names no session writes to the
  current test's session (``db``, or ``async_db`` through the async functions below),
  through factory-boy's own ``sqlalchemy_session_factory`` hook (:func:`current_session`,
  see :mod:`dbtest.factories._binding`). :class:`ModelFactory` is a base class that names
  it explicitly. :func:`bind_session` binds another session (seed sets, scripts).
* ``Factory.create_batch(n)`` is factory-boy's, at every size.
* :func:`bulk_create` is the opt-in bulk path: the same objects and rows as ``n`` times
  ``create()``, written with one COPY per table (primary keys reserved from the table's
  sequence, or one ``INSERT ... RETURNING``) instead of one flush per row; the objects come
  back persistent in the session. Factories whose declarations are all order-free
  (constants, ``Sequence``, ``LazyAttribute``, ``SelfAttribute``, :class:`dbtest.fakes.Fake`,
  ``SubFactory`` of such factories, ``post_generation``) are evaluated column by column,
  which is where the speed comes from; other factories are created by factory-boy, row by
  row, and flushed once. In the column-by-column path objects get their primary keys when
  the whole batch is built: a declaration that reads one
  (``LazyAttribute(lambda o: o.author.id)``) sees ``None`` there; read the relationship
  (``o.author``) instead, or use ``create_batch``.
* :func:`insert_rows` (``ctx.factories.rows`` in seeds) is the fastest path: the same
  rows, COPYed without building ORM objects at all; it returns the primary keys.
* Async (factory-boy cannot await): ``await acreate(F, **kw)``, ``await acreate_batch(F, n)``
  and ``await abulk_create(F, n)`` run factory-boy inside the ``AsyncSession``'s greenlet,
  so SubFactory, RelatedFactory and post-generation hooks keep working.
  :class:`AsyncFactoryMixin` (part of :class:`ModelFactory`) adds them as classmethods.
  These take no database object, hence the ``a`` names; functions that take one
  (``bulk_insert``, the assertions) return an awaitable when given an async one.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from dbtest.errors import ConfigError, SeedError
from dbtest.factories._binding import (
    all_factories,
    bind_session,
    bound_async_session,
    current_session,
    is_bound,
    is_dbtest_bound,
    reset_sequences,
    saved_factory_state,
    seed_factories,
    writing_to,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from dbtest.factories._model import ModelFactory

__all__ = ["AsyncFactoryMixin", "FactoryAccess", "ModelFactory", "abulk_create", "acreate",
           "acreate_batch", "all_factories", "bind_session", "bulk_create", "current_session",
           "insert_rows", "reserve_ids", "reset_sequences", "saved_factory_state",
           "seed_factories"]


def __getattr__(name: str) -> Any:
    if name == "ModelFactory":  # imports factory-boy (and Faker, ~1 s): only when asked
        from dbtest.factories._model import ModelFactory

        return ModelFactory
    if name == "BULK_THRESHOLD":  # create_batch no longer changes path with its size
        warnings.warn("dbtest.factories.BULK_THRESHOLD is deprecated: create_batch is "
                      "factory-boy's at every size; call dbtest.factories.bulk_create(Factory, "
                      "n) for the bulk path", DeprecationWarning, stacklevel=2)
        return 50
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def session_of(factory_cls: Any) -> Any:
    """The session ``factory_cls.create()`` would write to now."""
    meta = factory_cls._meta
    if meta.sqlalchemy_session_factory is not None:
        return meta.sqlalchemy_session_factory()
    if meta.sqlalchemy_session is None:
        raise ConfigError(f"{factory_cls.__name__} has no session: use it in a test with the db "
                          f"fixture, inside a seed set, or call dbtest.factories.bind_session")
    return meta.sqlalchemy_session


# -- the bulk path -------------------------------------------------------------------------
def bulk_create(factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
    """``factory_cls.create_batch(size, **kwargs)`` written through the bulk path.

    The objects are persistent in the factory's session, with primary keys. Order-free
    factories are built column by column; others by factory-boy, row by row, with their
    flushes held back (a factory naming its own session: flushed row by row, as
    factory-boy does). Then every new object is written with one COPY per table.
    """
    from dbtest.factories._columnar import columnar_build
    from dbtest.factories._persist import persist

    session = session_of(factory_cls)
    if session.new or session.dirty:
        session.flush()  # what the batch refers to must have its keys first
    made: list[Any] = []  # every new object, SubFactory parents included
    objects = columnar_build(factory_cls, size, kwargs, made)
    if objects is None:  # not order-free: factory-boy, row by row
        if not is_dbtest_bound(factory_cls) or factory_cls._meta.sqlalchemy_get_or_create:
            objects = factory_cls.create_batch(size, **kwargs)
            session.flush()
            return objects  # type: ignore[no-any-return]
        collector = _Collector(session)
        with writing_to(collector):
            objects = factory_cls.create_batch(size, **kwargs)
        made = collector.objects
    persist(session, made)
    if factory_cls._meta.sqlalchemy_session_persistence == "commit":
        session.commit()  # what create() would have done after each row
    return objects


class _Collector:
    """The session factory-boy writes to inside :func:`bulk_create`: ``add`` collects the
    object for the COPY, ``flush`` and ``commit`` wait for it; the rest is the session's."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.objects: list[Any] = []

    def add(self, instance: Any, _warn: bool = True) -> None:
        self.objects.append(instance)

    def flush(self, objects: Any = None) -> None:
        pass

    def commit(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


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

    session = session_of(factory_cls)
    rows = columnar_rows(factory_cls, size, kwargs)
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

    from dbtest.bulk import resolve_target

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
def _async_session(factory_cls: Any) -> AsyncSession:
    meta = factory_cls._meta
    if is_dbtest_bound(factory_cls) or (meta.sqlalchemy_session is None
                                        and meta.sqlalchemy_session_factory is None):
        found = bound_async_session()
        if found is not None:
            return found
        problem = ("is bound to a sync Session: use create()" if is_bound() else
                   "has no AsyncSession: request the async_db fixture or call "
                   "dbtest.factories.bind_session(async_session)")
    else:
        problem = ("names its own session: acreate and friends serve factories that write "
                   "to dbtest's (Meta naming no session, or sqlalchemy_session_factory = "
                   "dbtest.factories.current_session)")
    raise ConfigError(f"{factory_cls.__name__} {problem}")


async def acreate(factory_cls: Any, **kwargs: Any) -> Any:
    """``factory_cls.create(**kwargs)`` for a factory bound to an ``AsyncSession``."""
    session = _async_session(factory_cls)
    return await session.run_sync(lambda _sync: factory_cls.create(**kwargs))


async def acreate_batch(factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
    """``factory_cls.create_batch(size, **kwargs)`` for an ``AsyncSession``."""
    session = _async_session(factory_cls)
    return await session.run_sync(
        lambda _sync: factory_cls.create_batch(size, **kwargs))


async def abulk_create(factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
    """:func:`bulk_create` for an ``AsyncSession`` (asyncpg ``copy_records_to_table`` or
    psycopg COPY)."""
    session = _async_session(factory_cls)
    return await session.run_sync(
        lambda _sync: bulk_create(factory_cls, size, **kwargs))


class AsyncFactoryMixin:
    """Adds ``await Factory.acreate(**kw)``, ``await Factory.acreate_batch(n, **kw)`` and
    ``await Factory.abulk_create(n, **kw)``:
    ``class UserFactory(AsyncFactoryMixin, SQLAlchemyModelFactory): ...``"""

    @classmethod
    async def acreate(cls, **kwargs: Any) -> Any:
        """:func:`dbtest.factories.acreate` of this factory."""
        return await acreate(cls, **kwargs)

    @classmethod
    async def acreate_batch(cls, size: int, **kwargs: Any) -> list[Any]:
        """:func:`dbtest.factories.acreate_batch` of this factory."""
        return await acreate_batch(cls, size, **kwargs)

    @classmethod
    async def abulk_create(cls, size: int, **kwargs: Any) -> list[Any]:
        """:func:`dbtest.factories.abulk_create` of this factory."""
        return await abulk_create(cls, size, **kwargs)


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
        """``factory_cls.create_batch``: factory-boy's, row by row."""
        return factory_cls.create_batch(size, **kwargs)  # type: ignore[no-any-return]

    def bulk(self, factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
        """:func:`bulk_create`: the bulk path."""
        return bulk_create(factory_cls, size, **kwargs)

    def rows(self, factory_cls: Any, size: int, **kwargs: Any) -> list[Any]:
        """:func:`insert_rows`: rows without ORM objects, returns primary keys."""
        return insert_rows(factory_cls, size, **kwargs)
