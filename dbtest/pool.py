"""`FreshDatabasePool`: databases cloned from a template ahead of time.

A clone costs ~10-25 ms on tmpfs (more on disk); a test that needs a database of its own
should not wait for it. A background thread keeps ``size`` clones ready and drops used
ones, so ``acquire()`` usually returns at once.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from typing import TYPE_CHECKING

from dbtest.databases import admin_connection, create_database, drop_database

if TYPE_CHECKING:
    from dbtest.provision.server import PostgresServer

__all__ = ["FreshDatabasePool"]


class FreshDatabasePool:
    """Keeps ``size`` clones of ``template`` ready under names starting with ``prefix``."""

    def __init__(self, server: PostgresServer, template: str, prefix: str, size: int = 2,
                 strategy: str | None = None) -> None:
        self.server = server
        self.template = template
        self.prefix = prefix
        self.size = size
        self.strategy = strategy
        self._counter = itertools.count(1)
        self._ready: queue.Queue[str] = queue.Queue()
        self._todo: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._closed = False
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._work, name=f"dbtest-pool-{prefix}",
                                        daemon=True)
        self._thread.start()
        for _ in range(size):
            self._todo.put(("create", None))

    def _new_name(self) -> str:
        return f"{self.prefix}_{next(self._counter)}"

    def _create(self, admin: object) -> str:
        name = self._new_name()
        create_database(admin, name, purpose="fresh", template=self.template,  # type: ignore[arg-type]
                        strategy=self.strategy)
        return name

    def _work(self) -> None:
        with admin_connection(self.server.dsn) as admin:
            while True:
                action, name = self._todo.get()
                if action == "stop":
                    return
                try:
                    if action == "create":
                        self._ready.put(self._create(admin))
                    elif name is not None:
                        drop_database(admin, name)
                except BaseException as exc:  # reported to the next acquire()
                    self._errors.append(exc)

    def acquire(self) -> str:
        """A ready database (cloned now if none is ready); one more is queued."""
        if self._errors:
            raise self._errors.pop(0)
        try:
            name = self._ready.get_nowait()
        except queue.Empty:
            with admin_connection(self.server.dsn) as admin:
                name = self._create(admin)
        else:
            self._todo.put(("create", None))
        return name

    def release(self, name: str) -> None:
        """Drop ``name`` in the background (dbtest's own databases only)."""
        self._todo.put(("drop", name))

    def close(self, *, drop: bool = True) -> None:
        """Stop the thread and drop the unused clones (``drop=False``: the server goes
        away with them, so skip the work)."""
        if not drop:
            with contextlib.suppress(queue.Full):
                self._todo.put_nowait(("stop", None))
            self._closed = True
            return
        self._todo.put(("stop", None))
        self._thread.join(timeout=30)
        leftovers = []
        while True:
            try:
                leftovers.append(self._ready.get_nowait())
            except queue.Empty:
                break
        while True:
            try:
                action, name = self._todo.get_nowait()
            except queue.Empty:
                break
            if action == "drop" and name:
                leftovers.append(name)
        if leftovers:
            with admin_connection(self.server.dsn) as admin:
                for name in leftovers:
                    with contextlib.suppress(Exception):
                        drop_database(admin, name, wait=0.0)
