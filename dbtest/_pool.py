"""`FreshDatabasePool`: databases cloned from a template ahead of time.

A clone costs ~10-25 ms on tmpfs (more on disk); a test that needs a database of its own
should not wait for it. A background thread keeps ``size`` clones ready and drops used
ones, so ``acquire()`` usually returns at once.

Connections: the thread works on the run's admin connection when one is given (the
workspace's :class:`~dbtest._liveness.RunLease`; psycopg serialises the threads' use of
it), else on one of its own for the pool's lifetime. Each acquired database costs what
the test opens on it.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dbtest._databases import admin_connection, create_database, drop_database

if TYPE_CHECKING:
    import psycopg

    from dbtest.provision import PostgresServer

__all__ = ["FreshDatabasePool"]


class FreshDatabasePool:
    """Keeps ``size`` clones of ``template`` ready under names starting with ``prefix``."""

    def __init__(self, server: PostgresServer, template: str, prefix: str, size: int = 2,
                 strategy: str | None = None, *, admin: psycopg.Connection[Any] | None = None,
                 mark: dict[str, Any] | None = None) -> None:
        self.server = server
        self.admin = admin  # shared, not closed here
        self.mark = mark  # added to every clone's mark (the run token)
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

    @contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[Any]]:
        if self.admin is not None and not self.admin.closed:
            yield self.admin
        else:
            with admin_connection(self.server.dsn) as admin:
                yield admin

    def _create(self, admin: psycopg.Connection[Any]) -> str:
        name = self._new_name()
        create_database(admin, name, purpose="fresh", template=self.template,
                        strategy=self.strategy, mark=self.mark)
        return name

    def _work(self) -> None:
        with self._admin() as admin:
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
            with self._admin() as admin:
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
            with self._admin() as admin:
                for name in leftovers:
                    with contextlib.suppress(Exception):
                        drop_database(admin, name, wait=0.0)
