"""polyfactory's ``SQLAlchemyFactory``, writing to the current test's session.

polyfactory accepts a callable as ``__session__`` / ``__async_session__`` and calls it on
every ``create_sync()`` / ``create_async()``. A factory class that names no session of its
own gets dbtest's (the session bound for the test, as :func:`current_session` gives
factory-boy), set once on the class, never per test. Every polyfactory random source is
seeded from the test's seed, so a test makes the same rows whatever ran before it; a
factory with ``__random_seed__`` is reseeded with that seed.

Nothing is imported here: when the test process never imported polyfactory's SQLAlchemy
factory, there is nothing to bind.
"""

from __future__ import annotations

import sys
from typing import Any

from dbtest.errors import ConfigError

__all__ = ["adopt_polyfactory"]

_MODULE = "polyfactory.factories.sqlalchemy_factory"


def _subclasses(base: type) -> list[type]:
    out: list[type] = []
    stack: list[type] = list(base.__subclasses__())
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.add(cls)
            out.append(cls)
            stack.extend(cls.__subclasses__())
    return out


def _reseed(base: type, classes: list[type], seed: int) -> None:
    """Seed every ``Random`` and ``Faker`` the factories use, in place (dynamically made
    factories for nested models share them)."""
    randoms: dict[int, Any] = {}
    fakers: dict[int, Any] = {}
    root = sys.modules["polyfactory.factories.base"].BaseFactory
    for cls in [root, base, *classes]:
        own = getattr(cls, "__dict__", {})
        cls_seed = own.get("__random_seed__", seed)
        for name, found in (("__random__", randoms), ("__faker__", fakers)):
            value = own.get(name)
            if value is not None:
                found.setdefault(id(value), (value, cls_seed))
    for value, number in randoms.values():
        value.seed(number)
    for value, number in fakers.values():
        value.seed_instance(number)


def _sync_session() -> Any:
    from dbtest.factories._binding import current_session

    return current_session()


def _async_session() -> Any:
    from dbtest.factories._binding import bound_async_session

    found = bound_async_session()
    if found is None:
        raise ConfigError("no AsyncSession is bound for polyfactory's create_async(): request "
                          "the async_db fixture or call dbtest.factories.bind_session("
                          "async_session); in a sync test use create_sync()")
    return found


def adopt_polyfactory(*, seed: int | None = None) -> None:
    """Give session-less ``SQLAlchemyFactory`` classes dbtest's session callables (once)
    and, with ``seed``, seed them; nothing when polyfactory's SQLAlchemy factory was never
    imported."""
    module = sys.modules.get(_MODULE)
    if module is None:
        return
    base: Any = module.SQLAlchemyFactory
    classes = _subclasses(base)
    for cls in classes:
        for attr, source in (("__session__", _sync_session),
                             ("__async_session__", _async_session)):
            if getattr(cls, attr, None) is None:  # the class names no session of its own
                # staticmethod: polyfactory calls it through the class, with no argument
                setattr(cls, attr, staticmethod(source))
    if seed is not None:
        _reseed(base, classes, seed)
