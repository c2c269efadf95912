"""polyfactory's ``SQLAlchemyFactory``, bound to the current test's session.

A factory whose class names no session of its own (``__session__`` for ``db``,
``__async_session__`` for ``async_db``) gets the test's session for the test, and every
polyfactory random source is seeded from the test's seed: ``create_sync()`` /
``await create_async()`` write into the test's savepoint, and a test makes the same rows
whatever ran before it. A factory with ``__random_seed__`` is reseeded with that seed.

Nothing is imported here: when the test process never imported polyfactory's SQLAlchemy
factory, there is nothing to bind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["bind_polyfactory"]

_MODULE = "polyfactory.factories.sqlalchemy_factory"
_MISSING = object()
_BOUND: list[Any] = []  # sessions this module bound (a factory holding one is ours)


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


def bind_polyfactory(session: Any, *, seed: int | None = None) -> Callable[[], None] | None:
    """Bind session-less ``SQLAlchemyFactory`` classes to ``session`` (a ``Session`` or an
    ``AsyncSession``) and seed them; return the finalizer that unbinds, or ``None`` when
    polyfactory's SQLAlchemy factory was never imported."""
    module = sys.modules.get(_MODULE)
    if module is None:
        return None
    from sqlalchemy.ext.asyncio import AsyncSession

    base: Any = module.SQLAlchemyFactory
    attr = "__async_session__" if isinstance(session, AsyncSession) else "__session__"
    classes = _subclasses(base)
    previous: dict[type, Any] = {}
    for cls in classes:
        current = getattr(cls, attr, None)
        if current is not None and not any(current is s for s in _BOUND):
            continue  # the factory names its own session (or inherits one): leave it
        previous[cls] = cls.__dict__.get(attr, _MISSING)
        setattr(cls, attr, session)
    _BOUND.append(session)
    if seed is not None:
        _reseed(base, classes, seed)

    def unbind() -> None:
        for cls, value in previous.items():
            if cls.__dict__.get(attr) is not session:
                continue
            if value is _MISSING:
                delattr(cls, attr)
            else:
                setattr(cls, attr, value)
        if any(s is session for s in _BOUND):
            _BOUND.remove(session)

    return unbind
