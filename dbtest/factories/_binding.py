"""Which session a factory-boy factory writes to: factory-boy's own session factory hook.

factory-boy (>= 3.3) calls ``Meta.sqlalchemy_session_factory`` on every ``create()``.
dbtest's is :func:`current_session`: it returns the session on top of a stack that
:func:`bind_session` pushes (the ``db`` / ``async_db`` fixtures, seed sets) and its
finalizer pops. Binding a test is one list append; nothing is written to factory-boy's
classes, and no method of factory-boy is replaced.

A factory whose ``Meta`` names neither a session nor a session factory is given
:func:`current_session` as its ``sqlalchemy_session_factory`` the first time dbtest binds
after the class exists (factory-boy's documented option, written once per class, never per
test). Factories naming their own session or session factory are left alone.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbtest.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["all_factories", "bind_session", "bound_async_session", "current_session",
           "is_bound", "is_dbtest_bound", "reset_sequences", "saved_factory_state",
           "seed_factories", "writing_to"]


@dataclass(eq=False)
class _Binding:
    session: Session  # what factory-boy writes through (an AsyncSession's sync_session)
    async_session: AsyncSession | None


# Process-wide, like the test run it serves: the concurrency helpers run factories in
# worker threads, which a ContextVar set in a fixture would not reach.
_BOUND: list[_Binding] = []


def current_session() -> Session:
    """The session dbtest bound for the current test (or seed set).

    Use it as factory-boy's ``Meta.sqlalchemy_session_factory`` (or subclass
    :class:`dbtest.factories.ModelFactory`); factories whose ``Meta`` names no session get
    it automatically. In an ``async_db`` test this is the ``AsyncSession``'s
    ``sync_session``, usable only inside :func:`~dbtest.factories.acreate` and friends.
    """
    if not _BOUND:
        raise ConfigError("no session is bound for factories: use the factory in a test that "
                          "requests the db or async_db fixture, inside a seed set, or call "
                          "dbtest.factories.bind_session(session) first")
    binding = _BOUND[-1]
    if binding.async_session is not None and not _in_greenlet():
        raise ConfigError("a factory's create() ran against the test's AsyncSession, and "
                          "factory-boy cannot await: use `await dbtest.factories.acreate("
                          "Factory, ...)` (or acreate_batch, abulk_create; or "
                          "`await Factory.acreate()` on dbtest.factories.ModelFactory)")
    return binding.session


def _in_greenlet() -> bool:
    """Whether this runs inside SQLAlchemy's greenlet (``run_sync``: acreate and friends)."""
    from sqlalchemy.util import concurrency

    if not hasattr(concurrency, "in_greenlet"):  # early 2.0 releases (2.0.0 is the floor)
        import importlib

        impl: Any = importlib.import_module("sqlalchemy.util._concurrency_py3k")
        return isinstance(impl.getcurrent(), impl._AsyncIoGreenlet)
    return bool(concurrency.in_greenlet())


@contextlib.contextmanager
def writing_to(session: Any) -> Iterator[None]:
    """Inside the block :func:`current_session` returns ``session`` (the bulk path's
    collector); the async session of the current binding is kept, and so are its checks."""
    binding = _Binding(session, bound_async_session())
    _BOUND.append(binding)
    try:
        yield
    finally:
        _BOUND.remove(binding)


def is_bound() -> bool:
    """Whether a session is bound (a test with ``db`` or ``async_db``, a seed set...)."""
    return bool(_BOUND)


def bound_async_session() -> AsyncSession | None:
    """The ``AsyncSession`` of the current binding (``None``: none, or a sync one)."""
    return _BOUND[-1].async_session if _BOUND else None


def is_dbtest_bound(factory_cls: Any) -> bool:
    """Whether ``factory_cls`` takes its session from :func:`current_session`."""
    meta = getattr(factory_cls, "_meta", None)
    return getattr(meta, "sqlalchemy_session_factory", None) is current_session


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


def _adopt_sessionless() -> None:
    for cls in all_factories():
        meta: Any = getattr(cls, "_meta", None)
        if meta is None or meta.sqlalchemy_session is not None \
                or meta.sqlalchemy_session_factory is not None:
            continue  # bound already, or the factory's Meta names its own session
        meta.sqlalchemy_session_factory = current_session


def bind_session(session: Session | AsyncSession, *, seed: int | None = None
                 ) -> Callable[[], None]:
    """Make ``session`` (a Session or AsyncSession) the one factories write to.

    Returns the finalizer that ends this binding (and any made after it and not ended:
    a test that binds again inside itself). With ``seed`` (the test's seed) factory-boy's
    and Faker's random state and dbtest fakes are reseeded and every factory sequence
    restarts, so a test makes the same rows whatever ran before it. polyfactory's
    ``SQLAlchemyFactory`` classes write to it and are seeded too
    (:mod:`dbtest.factories._polyfactory`).
    """
    from dbtest.factories._polyfactory import adopt_polyfactory

    adopt_polyfactory(seed=seed)
    sync: Any = getattr(session, "sync_session", session)
    binding = _Binding(sync, None if sync is session else session)  # type: ignore[arg-type]
    _BOUND.append(binding)
    # Until something imports factory-boy no factory-boy factory exists, so there is
    # nothing to adopt or seed: then this imports nothing (factory-boy imports Faker, ~1 s).
    if "factory" in sys.modules:
        _adopt_sessionless()
        if seed is not None:
            seed_factories(seed)
            reset_sequences()

    def unbind() -> None:
        for index, found in enumerate(_BOUND):
            if found is binding:
                del _BOUND[index:]
                break

    return unbind


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
