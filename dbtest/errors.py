"""The one exception tree of dbtest.

::

    DbtestError
    ├── ConfigError            a setting, marker or argument is wrong
    │   └── MissingExtra       a feature's optional dependencies are not installed
    ├── ProvisionError         no server could be had
    │   ├── PostgresNotFound   no backend is usable (lists what was tried)
    │   └── StartupFailed      a server was found but did not come up
    ├── TemplateError          a template database could not be built or used
    ├── MigrationError         a schema source (Alembic revision, SQL file, ...) failed
    ├── SeedError              a seed set could not be loaded
    ├── SnapshotError          a database snapshot could not be taken or restored
    ├── ConcurrencyError       a concurrency scenario is malformed or hung
    │   └── (dbtest.concurrency.WorkerError: run_concurrently workers failed)
    ├── RefusedError           dbtest refused to touch something it does not own
    ├── LeakError              a savepoint test committed data for real
    └── DbAssertionError       (also an AssertionError) a database assertion failed

Every message names the file, revision, seed, setting or database at fault and what
to do about it. Passwords in URLs are masked (see :func:`mask_url`).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ConcurrencyError",
    "ConfigError",
    "DbAssertionError",
    "DbtestError",
    "LeakError",
    "MaskedStr",
    "MigrationError",
    "MissingExtra",
    "PostgresNotFound",
    "ProvisionError",
    "RefusedError",
    "SeedError",
    "SnapshotError",
    "StartupFailed",
    "TemplateError",
    "mask_url",
    "require_extra",
]

# user:password@ in URLs, and password=... in libpq conninfo strings.
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?=@)")
_DSN_PASSWORD = re.compile(r"(?P<pre>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)


def mask_url(text: str) -> str:
    """Return ``text`` with every password in a URL or conninfo string replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + "***", text)
    return _DSN_PASSWORD.sub(lambda m: m.group("pre") + "***", text)


class MaskedStr(str):
    """A URL or conninfo string whose ``repr`` masks its password: a traceback's frame
    locals (``--showlocals``) print the repr, so a frame holding one shows no secret."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask_url(str(self)))


class DbtestError(Exception):
    """Base of every error dbtest raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(mask_url(message))


class ConfigError(DbtestError):
    """A setting, CLI option, marker argument or schema string is invalid."""


class MissingExtra(ConfigError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names
    the ``dbtest[...]`` extra that brings it. Also an ``ImportError``."""


def require_extra(module: str, extra: str, feature: str) -> Any:
    """Import and return ``module``, or raise :class:`MissingExtra` saying that
    ``feature`` needs ``pip install 'dbtest[<extra>]'``."""
    import importlib

    __tracebackhide__ = True  # pytest shows the caller's line, not this helper
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None:
            raise
        raise MissingExtra(f"{feature} needs {exc.name.split('.')[0]}, which is not "
                           f"installed. Install it with: pip install 'dbtest[{extra}]' "
                           f"(or 'dbtest[all]')") from None


class ProvisionError(DbtestError):
    """No PostgreSQL server could be provided."""


class PostgresNotFound(ProvisionError):
    """No backend is usable; the message lists what was tried and how to fix each."""


class StartupFailed(ProvisionError):
    """A server was found but failed to start or to answer; the message has its log."""


class TemplateError(DbtestError):
    """A template database could not be built, verified or cloned."""


class MigrationError(DbtestError):
    """Applying the schema failed; names the revision or file and the database error."""


class SeedError(DbtestError):
    """A seed set is unknown, malformed, cyclic or failed while loading."""


class SnapshotError(DbtestError):
    """A database snapshot could not be saved, restored, exported or found."""


class ConcurrencyError(DbtestError):
    """A concurrency scenario is malformed, or hung (the message holds the lock graph)."""


class RefusedError(DbtestError):
    """dbtest refused to drop or change a database or directory it did not create."""


class DbAssertionError(DbtestError, AssertionError):
    """A database assertion failed; the message shows expected against actual rows."""


class LeakError(DbtestError):
    """A savepoint-isolated test committed data for real (another connection, raw COMMIT)."""
