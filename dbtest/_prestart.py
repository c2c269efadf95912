"""Start the server in the background while pytest collects.

Starting PostgreSQL is mostly waiting (a child process boots, a connection is polled),
which a thread can do while the main thread imports and collects test modules. The
plugin starts a :class:`Prestart` as soon as the run looks like it needs a server (the
first collected item that uses a database fixture, or at session start when
``[tool.dbtest]`` exists: then after :data:`SPECULATIVE_DELAY` unless collection ended
first or found a database test), and :meth:`Prestart.result` hands the workspace to the first
fixture that needs it: the start's error, if any, is raised there, in the main thread, as
if the start had happened there (never printed by the thread). When collection ends with
no item that needs a server, :meth:`Prestart.cancel` stops it as soon as it is up.

When collection ends with tests that need the server, the plugin imports, in the main
thread, what the first database test will (:func:`warm_imports`: SQLAlchemy, its ORM and
dialect, about 3/4 of a warm run's CPU time after pytest's own) while the background
thread boots the server: imports hold the GIL, but a starting server mostly waits for its
child process, so the two overlap. (Not in a thread of their own: SQLAlchemy imported by
two threads at once, the main one collecting, can see a partly initialised module and
register its SQL functions twice.) The first fixture that gets the workspace then calls
:func:`freeze_heap` (in the main thread, between tests): it moves what is alive by then
to the garbage collector's permanent
generation, so that pytest's own full collections at the end of the run (one in
``pytest_unconfigure``, one in its cleanup, then the interpreter's) do not walk
SQLAlchemy's hundreds of thousands of objects again and again.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbtest._workspace import Workspace

__all__ = ["Prestart", "driver_of", "freeze_heap", "maybe_start", "needs_server",
           "read_mode", "warm_imports"]

#: what a run's first database test imports besides dbtest and the driver package (which
#: the background start imports: one thread per module, never two at once)
WARM_MODULES = ("sqlalchemy", "sqlalchemy.orm", "sqlalchemy.pool")
#: the SQLAlchemy dialect module of each ``driver`` setting (it imports no driver itself)
DIALECTS = {"psycopg": "sqlalchemy.dialects.postgresql.psycopg",
            "psycopg2": "sqlalchemy.dialects.postgresql.psycopg2"}


def warm_imports(driver: str = "psycopg", modules: Iterable[str] = WARM_MODULES) -> None:
    """Import what the first database test needs (from the main thread). A module that
    fails to import is left for its real user to report."""
    dialect = DIALECTS.get(driver)
    for name in (*modules, *((dialect,) if dialect else ())):
        # e.g. a missing extra: the module's real user raises the clear error
        with contextlib.suppress(Exception):
            importlib.import_module(name)


#: seconds a speculative start (at session start) waits for a collected database test or
#: the end of collection: a run with none (unit tests in a configured project) then ends
#: without starting anything, while a long collection still overlaps the start
SPECULATIVE_DELAY = 0.1

_frozen = False


def freeze_heap() -> None:
    """``gc.collect()`` then ``gc.freeze()``, once per process: the objects alive now
    (mostly modules, classes and functions of the libraries just imported, which live until
    the process ends) are left out of every later collection. The collection first frees
    the garbage earlier tests left (their finalizers and warnings run now, not at exit).
    Objects made afterwards are collected as before; frozen ones that become garbage in a
    cycle stay in memory (a few at most: module-level objects rarely die), and
    ``gc.get_objects()`` no longer lists them (``gc.unfreeze()`` brings them back)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


class Prestart:
    """One background start of a :class:`~dbtest._workspace.Workspace`'s server."""

    def __init__(self, make: Callable[[], Workspace], *, delay: float = 0.0) -> None:
        self._make = make
        self.workspace: Workspace | None = None
        self.error: BaseException | None = None
        self._cancelled = threading.Event()
        #: set when a collected test needs the server or collection ended: stop waiting
        self._go = threading.Event()
        self._delay = delay
        self._thread = threading.Thread(target=self._run, name="dbtest-prestart", daemon=True)
        self._thread.start()

    def needed(self) -> None:
        """A collected test needs the server: a speculative start waits no longer."""
        self._go.set()

    def _run(self) -> None:
        try:
            if self._delay:  # speculative: a trivial run's collection ends first
                self._go.wait(self._delay)
                if self._cancelled.is_set():
                    return
            workspace = self._make()  # imports most of what the start needs
            self.workspace = workspace
            if not self._cancelled.is_set():  # collection may have ended meanwhile
                _ = workspace.server  # starts it (under the workspace's own lock)
        except BaseException as exc:  # handed to the main thread by result()
            self.error = exc

    def cancel(self) -> None:
        """No test needs the server: let :meth:`close` stop it."""
        self._cancelled.set()
        self._go.set()

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Workspace:
        """The workspace with its server started; raises what the start raised."""
        self.join()
        if self.error is not None:
            raise self.error.with_traceback(self.error.__traceback__)
        if self.workspace is None:  # cancelled before it began, yet a test asks for it
            self.workspace = self._make()
        return self.workspace

    def close(self) -> None:
        """Wait for the start, then stop what it started (the run is over)."""
        self.join()
        if self.workspace is not None:
            self.workspace.close()


# -- when to start: asked by the plugin's hooks -------------------------------------------
def maybe_start(state: Any, config: Any, make: Callable[[], Workspace], *, controller: bool,
                speculative: bool) -> None:
    """Start ``state.prestart`` unless the ``prestart`` setting says not to: at session
    start (``speculative``) only with ``auto``, from a collected database test also with
    ``items``; never twice, nor once the workspace exists."""
    if state.prestart_mode is None:
        state.prestart_mode = read_mode(config, controller=controller)
    wanted = ("auto",) if speculative else ("auto", "items")
    if state.prestart_mode in wanted and state.prestart is None and state.workspace is None:
        state.prestart = Prestart(make, delay=SPECULATIVE_DELAY if speculative else 0.0)
    if not speculative and state.prestart is not None:
        state.prestart.needed()


def driver_of(state: Any) -> str:
    """The ``driver`` setting (``psycopg`` while the settings have an error: it is
    reported where they are used)."""
    try:
        return str(state.settings.driver)
    except Exception:
        return "psycopg"
def needs_server(item: Any) -> bool:
    """Whether a collected test uses a database fixture (they all go through the
    workspace)."""
    return "_dbtest_workspace" in getattr(item, "fixturenames", ())


def read_mode(config: Any, *, controller: bool) -> str:
    """``auto``, ``items`` or ``off`` for this process: ``off`` where no test runs (an
    xdist ``controller``, ``--collect-only``, ``--fixtures``, ``--setup-plan``), else the
    ``prestart`` setting (option, environment, ``[tool.dbtest]``)."""
    import os

    option = config.option
    if controller or any(getattr(option, name, False) for name in (
            "collectonly", "showfixtures", "show_fixtures_per_test", "setupplan")):
        return "off"
    value = getattr(option, "dbtest_prestart", None) or os.environ.get("DBTEST_PRESTART") \
        or _file_mode(config.rootpath)
    return str(value or "auto").strip().lower()


def _file_mode(rootpath: Path) -> str:
    """``prestart`` from ``[tool.dbtest]``, ``auto`` if the table exists, else ``items``
    (read without resolving settings: a bad setting is reported where it is used)."""
    from dbtest.settings import find_pyproject

    path = find_pyproject(rootpath)
    try:
        text = path.read_text() if path else ""
    except OSError:
        text = ""
    table = None
    if "tool.dbtest" in text:  # most projects: no need to parse
        import tomllib

        try:
            table = tomllib.loads(text)["tool"]["dbtest"]
        except (ValueError, KeyError, TypeError):
            table = None
    if not isinstance(table, dict):
        return "items"
    return str(table.get("prestart", "auto"))
