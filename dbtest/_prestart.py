"""Start the server in the background while pytest collects.

Starting PostgreSQL is mostly waiting (a child process boots, a connection is polled),
which a thread can do while the main thread imports and collects test modules. The
plugin starts a :class:`Prestart` as soon as the run looks like it needs a server (the
first collected item that uses a database fixture, or at session start when
``[tool.dbtest]`` exists), and :meth:`Prestart.result` hands the workspace to the first
fixture that needs it: the start's error, if any, is raised there, in the main thread, as
if the start had happened there (never printed by the thread). When collection ends with
no item that needs a server, :meth:`Prestart.cancel` stops it as soon as it is up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbtest._workspace import Workspace

__all__ = ["Prestart", "maybe_start", "needs_server", "read_mode"]


class Prestart:
    """One background start of a :class:`~dbtest._workspace.Workspace`'s server."""

    def __init__(self, make: Callable[[], Workspace]) -> None:
        self._make = make
        self.workspace: Workspace | None = None
        self.error: BaseException | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbtest-prestart", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            workspace = self._make()  # imports most of what the start needs
            self.workspace = workspace
            if not self._cancelled.is_set():  # collection may have ended meanwhile
                _ = workspace.server  # starts it (under the workspace's own lock)
        except BaseException as exc:  # handed to the main thread by result()
            self.error = exc

    def cancel(self) -> None:
        """No test needs the server: let :meth:`close` stop it."""
        self._cancelled.set()

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Workspace:
        """The workspace with its server started; raises what the start raised."""
        self.join()
        if self.error is not None:
            raise self.error.with_traceback(self.error.__traceback__)
        assert self.workspace is not None
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
        state.prestart = Prestart(make)
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
