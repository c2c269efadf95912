"""An app's engine pointed at a test database (``plug_app``'s engines): every new
connection goes to the test database, whichever module holds the engine object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["AppEngine"]

#: connect arguments that say where and as whom to connect: replaced by the test database's
_LOCATION = ("host", "hostaddr", "port", "dbname", "database", "user", "password", "service",
             "sslmode", "dsn")


@dataclass
class AppEngine:
    """An app's engine pointed at a test database until :meth:`restore`."""

    engine: Engine  # the sync engine (an AsyncEngine's ``sync_engine``)
    connect_args: dict[str, Any] = field(default_factory=dict)
    execution_options: dict[str, Any] = field(default_factory=dict)
    _target: dict[str, Any] | None = None
    _original_url: Any = None
    _listening: bool = False

    def point_at(self, url: str) -> None:
        """Make every new connection of the engine go to ``url``'s database (with the
        engine's own driver); close its pooled connections to the previous one."""
        from sqlalchemy import event
        from sqlalchemy.engine import make_url

        target = make_url(url).set(drivername=self.engine.url.drivername)
        _, cparams = self.engine.dialect.create_connect_args(target)
        self._target = {**cparams, **self.connect_args}
        if self._original_url is None:
            self._original_url = self.engine.url
        if not self._listening:
            event.listen(self.engine, "do_connect", self._do_connect)
            if self.execution_options:
                event.listen(self.engine, "engine_connect", self._set_options)
            self._listening = True
        self.engine.url = target
        self.engine.dispose()

    def _do_connect(self, dialect: Any, record: Any, cargs: list[Any],
                    cparams: dict[str, Any]) -> None:
        assert self._target is not None
        for key in _LOCATION:
            cparams.pop(key, None)
        cparams.update(self._target)

    def _set_options(self, connection: Connection) -> None:
        connection.execution_options(**self.execution_options)

    def restore(self) -> None:
        """Point the engine back at its own URL and stop listening."""
        from sqlalchemy import event

        if self._listening:
            event.remove(self.engine, "do_connect", self._do_connect)
            if self.execution_options:
                event.remove(self.engine, "engine_connect", self._set_options)
            self._listening = False
        if self._original_url is not None:
            self.engine.url = self._original_url
            self._original_url = None
        self.engine.dispose()
