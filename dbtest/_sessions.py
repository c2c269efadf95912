"""How the ``db`` and ``async_db`` sessions are built: with the application's own options.

A test session should behave like the application's: an async app built with
``async_sessionmaker(engine, expire_on_commit=False)`` reads attributes after ``commit()``,
and a test session that expires them fails there with ``MissingGreenlet``. So the
options come from, highest first:

1. the ``session_options`` setting (``[tool.dbtest.session_options]``), key by key;
2. the application's ``sessionmaker`` / ``async_sessionmaker`` when one is given
   (``app_factory``; the app-integration API passes the app's own);
3. defaults: SQLAlchemy's for ``Session``, and ``expire_on_commit=False`` for
   ``AsyncSession`` (SQLAlchemy's advice for asyncio: an expired attribute cannot be
   loaded implicitly without an ``await``).

``bind`` and ``join_transaction_mode`` always come from dbtest (the test's connection and
its savepoint mode).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtest.errors import ConfigError

if TYPE_CHECKING:
    from dbtest.settings import Settings

__all__ = ["OPTION_KEYS", "SessionOptions", "check_session_options", "session_options"]

#: keys of the ``session_options`` setting: ``class`` (a ``Session`` subclass for ``db``),
#: ``async_class`` (an ``AsyncSession`` subclass for ``async_db``), and the
#: ``sessionmaker`` keywords dbtest passes through
OPTION_KEYS = ("expire_on_commit", "autoflush", "autobegin", "info", "class", "async_class")
_BOOLS = ("expire_on_commit", "autoflush", "autobegin")
#: sessionmaker keywords taken from an application's factory (never its bind)
_FROM_APP = ("expire_on_commit", "autoflush", "autobegin", "info")


@dataclass(frozen=True)
class SessionOptions:
    """The class and keyword options of one kind of test session (sync or async)."""

    session_class: type
    options: Mapping[str, Any] = field(default_factory=dict)

    def make(self, bind: Any, **extra: Any) -> Any:
        """A new session on ``bind`` (``info`` copied, so tests never share one dict)."""
        kwargs = dict(self.options)
        if "info" in kwargs:
            kwargs["info"] = dict(kwargs["info"])
        kwargs.update(extra)
        return self.session_class(bind=bind, **kwargs)


def check_session_options(value: Any, where: str) -> dict[str, Any]:
    """Validate the ``session_options`` setting (a table, or JSON text from the environment);
    the classes are imported later, when a session is made."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"{where} must be a JSON object such as "
                              f"'{{\"expire_on_commit\": false}}'; got {value!r} ({exc}).") \
                from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table of session options (e.g. "
                          f"[tool.dbtest.session_options] expire_on_commit = false); got "
                          f"{type(value).__name__}.")
    out = dict(value)
    unknown = sorted(set(out) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown session option(s) {', '.join(unknown)}. Known: "
                          f"{', '.join(OPTION_KEYS)}.")
    for key in _BOOLS:
        if key in out and not isinstance(out[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {out[key]!r}.")
    if "info" in out and not isinstance(out["info"], Mapping):
        raise ConfigError(f"{where}: info must be a table, got {type(out['info']).__name__}.")
    for key in ("class", "async_class"):
        if key in out and (not isinstance(out[key], str) or ":" not in out[key]):
            raise ConfigError(f"{where}: {key} must be '<module>:<attr>' naming a session "
                              f"class, e.g. 'myapp.db:AppSession'; got {out[key]!r}.")
    return out


def _import_class(path: str, base: type, key: str) -> type:
    module, _, attr = path.partition(":")
    where = f"session_options {key} = {path!r}"
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import it ({exc}). Fix the module path.") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{where} is not a subclass of {base.__module__}.{base.__name__}; "
                          f"name a session class.")
    return cls


def session_options(settings: Settings | None, *, asynchronous: bool = False,
                    app_factory: Any = None) -> SessionOptions:
    """The class and options of the ``db`` (or, ``asynchronous``, ``async_db``) session.

    ``app_factory`` is the application's ``sessionmaker`` / ``async_sessionmaker`` (its
    ``class_`` and ``kw`` are read); the ``session_options`` setting wins key by key.
    Without one, the result is worked out once per ``settings`` (every test asks).
    """
    if app_factory is None:
        cached = _CACHE.get((id(settings), asynchronous))
        if cached is not None and cached[0] is settings:
            return cached[1]
        found = _session_options(settings, asynchronous, None)
        _CACHE[(id(settings), asynchronous)] = (settings, found)  # settings kept: ids stay
        return found
    return _session_options(settings, asynchronous, app_factory)


#: (id of the settings, asynchronous) -> (those settings, their options)
_CACHE: dict[tuple[int, bool], tuple[Settings | None, SessionOptions]] = {}


def _session_options(settings: Settings | None, asynchronous: bool, app_factory: Any
                     ) -> SessionOptions:
    from sqlalchemy.orm import Session

    if asynchronous:
        from sqlalchemy.ext.asyncio import AsyncSession

        base: type = AsyncSession
        options: dict[str, Any] = {"expire_on_commit": False}
    else:
        base, options = Session, {}
    session_class = base
    if app_factory is not None:
        app_class = getattr(app_factory, "class_", None)
        if isinstance(app_class, type) and issubclass(app_class, base):
            session_class = app_class
        kw = getattr(app_factory, "kw", {}) or {}
        options.update({k: kw[k] for k in _FROM_APP if k in kw})
        sync_class = kw.get("sync_session_class")
        if asynchronous and sync_class is not None:
            options["sync_session_class"] = sync_class
    configured = dict(getattr(settings, "session_options", None) or {})
    class_key = "async_class" if asynchronous else "class"
    if class_key in configured:
        session_class = _import_class(configured[class_key], base, class_key)
    options.update({k: v for k, v in configured.items() if k not in ("class", "async_class")})
    return SessionOptions(session_class, options)
