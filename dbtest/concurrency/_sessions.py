"""The live side of a scenario: one psycopg connection and one thread per session.

A control ("monitor") connection runs the scenario's setup/teardown and polls
``pg_blocking_pids``; it never takes part in the steps.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from dbtest.concurrency._target import classify, describe_error
from dbtest.errors import ConcurrencyError, mask_url

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from dbtest.concurrency._scenario import Action, SessionSpec, StepSpec

__all__ = ["Connections", "Done", "Live", "execute_step", "run_action"]

_IDLE = psycopg.pq.TransactionStatus.IDLE
_INERROR = psycopg.pq.TransactionStatus.INERROR
# Any of these may end a wait (or an idle blocker) without the scenario's help.
_TIMEOUTS_SQL = ("SELECT current_setting('lock_timeout') <> '0' OR "
                 "current_setting('statement_timeout') <> '0' OR "
                 "current_setting('idle_in_transaction_session_timeout') <> '0'")


@dataclass
class Done:
    """What a step's thread hands back (exceptions are data, never raised across threads)."""

    outcome: str
    rows: list[tuple[Any, ...]] | None = None
    value: Any = None
    exception: BaseException | None = None
    sqlstate: str | None = None
    message: str = ""
    finished: float = 0.0


class Live:
    """One session's connection, thread and in-flight step."""

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.executor = ThreadPoolExecutor(max_workers=1,
                                           thread_name_prefix=f"dbtest-{spec.name}")
        self.conn: psycopg.Connection[Any] | None = None
        self.pid = 0
        self.sa: Connection | None = None
        self.self_ending = False  # lock/statement/idle timeouts set: waits may end alone
        self.timeouts_read = False
        self.future: Future[Done] | None = None
        self.step: StepSpec | None = None
        self.position = -1
        self.sent = 0.0
        self.since = 0.0
        self.waiting = False
        self.was_blocked = False
        self.blocked_by: tuple[str, ...] = ()
        self.detected_after: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self, step: StepSpec, position: int) -> None:
        """Send ``step`` to this session's thread."""
        self.step, self.position = step, position
        self.sent = self.since = time.monotonic()
        self.waiting = self.was_blocked = False
        self.blocked_by, self.detected_after = (), None
        self.future = self.executor.submit(execute_step, self, step)

    def clear(self) -> None:
        """Forget the finished (or abandoned) step."""
        self.future, self.step, self.waiting = None, None, False


def _rows(cursor: psycopg.Cursor[Any]) -> list[tuple[Any, ...]] | None:
    rows = None
    while True:  # several statements: keep the last result that had rows
        if cursor.description is not None:
            rows = [tuple(r) for r in cursor.fetchall()]
        if not cursor.nextset():
            return rows


def run_action(conn: psycopg.Connection[Any], sa: Connection | None, action: Action) -> Any:
    """Run a setup/teardown action: SQL text, a composable, a statement or a callable."""
    if isinstance(action, str | sql.SQL | sql.Composed):
        with conn.cursor() as cur:
            cur.execute(action)
        return None
    assert sa is not None
    if callable(action) and not hasattr(action, "_execute_on_connection"):
        return action(sa)
    return sa.execute(action)


def _read_self_ending(live: Live) -> None:
    conn = live.conn
    if conn is not None and conn.info.transaction_status != _INERROR:
        row = conn.execute(_TIMEOUTS_SQL).fetchone()
        live.self_ending = bool(row and row[0])
        live.timeouts_read = True


def execute_step(live: Live, step: StepSpec) -> Done:
    """Run ``step`` on ``live``'s connection (in that session's thread)."""
    conn = live.conn
    assert conn is not None
    rows = value = None
    try:
        if (step.implicit_begin and not live.spec.autocommit
                and conn.info.transaction_status == _IDLE):
            conn.execute(live.spec.begin_sql())
        if step.kind in ("sql", "composable"):
            with conn.cursor() as cur:
                cur.execute(step.action)
                rows = _rows(cur)
        else:
            sa = live.sa
            assert sa is not None
            if step.kind == "statement":
                result = sa.execute(step.action)
                rows = [tuple(r) for r in result] if result.returns_rows else None
            else:
                if not sa.in_transaction():
                    # Sessions bound to the connection join this transaction instead of
                    # owning (and committing) it: the permutation decides when it ends.
                    sa.begin()
                value = step.action(sa)
        if step.kind == "callable" or "timeout" in step.text.lower():
            _read_self_ending(live)
        return Done("ok", rows, value, finished=time.monotonic())
    except Exception as exc:
        outcome, sqlstate = classify(exc)
        return Done(outcome, None, None, exc, sqlstate, describe_error(exc), time.monotonic())


def _connect(conninfo: str, name: str, deadlock_timeout: str | None) -> psycopg.Connection[Any]:
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10,
                               application_name=f"dbtest:{name}"[:63])
    except psycopg.OperationalError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise ConcurrencyError(f"scenario cannot connect to {mask_url(conninfo)}: {reason}. "
                               f"Check that the database exists (use fresh_db.url).") from None
    if deadlock_timeout:
        # only superusers may; PostgreSQL's default (1 s) applies otherwise
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SET deadlock_timeout = {}").format(
                sql.Literal(deadlock_timeout)))
    return conn


class Connections:
    """The control connection plus one :class:`Live` per session that has run."""

    def __init__(self, conninfo: str, deadlock_timeout: str | None) -> None:
        self.conninfo = conninfo
        self.deadlock_timeout = deadlock_timeout
        self.monitor = _connect(conninfo, "scenario-control", None)
        self.monitor_sa: Connection | None = None
        self.lives: dict[str, Live] = {}
        self.broken = False
        self._engine: Engine | None = None
        self._pending: list[psycopg.Connection[Any]] = []

    # -- opening ---------------------------------------------------------------------------

    def _wrap(self, conn: psycopg.Connection[Any]) -> Connection:
        """A SQLAlchemy Connection over ``conn`` (which must be idle)."""
        if self._engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            # One engine for all sessions: its dialect is initialised once; the creator
            # hands out our already-open connections.
            self._engine = create_engine("postgresql+psycopg://", creator=self._pending.pop,
                                         poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._pending.append(conn)
        return self._engine.connect()

    def ensure(self, specs: list[SessionSpec], needs_sa: set[str]) -> None:
        """Connect the sessions in ``specs`` that have no connection yet (in parallel)."""
        new = [s for s in specs if s.name not in self.lives]
        pending = []
        for spec in new:
            live = Live(spec)
            self.lives[spec.name] = live
            pending.append((live, live.executor.submit(
                _connect, self.conninfo, spec.name, self.deadlock_timeout)))
        errors = []
        for live, future in pending:
            try:
                live.conn = future.result(timeout=30)
                live.pid = live.conn.info.backend_pid
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        for name in needs_sa:
            live = self.lives[name]
            if live.sa is None and live.conn is not None:
                live.sa = self._wrap(live.conn)

    def control_sa(self) -> Connection:
        """A SQLAlchemy Connection over the control connection (for callable setups)."""
        if self.monitor_sa is None:
            self.monitor_sa = self._wrap(self.monitor)
        return self.monitor_sa

    def session_setup(self, specs: list[SessionSpec]) -> None:
        """Run each session's setup on its own connection (in parallel)."""
        def setup(live: Live) -> None:
            assert live.conn is not None
            for action in live.spec.setup:
                try:
                    run_action(live.conn, live.sa, action)
                except Exception as exc:
                    raise ConcurrencyError(f"setup of session {live.name!r} failed: "
                                           f"{describe_error(exc)}") from exc
            if live.spec.setup or not live.timeouts_read:
                _read_self_ending(live)

        futures = [self.lives[s.name].executor.submit(setup, self.lives[s.name])
                   for s in specs]
        for future in futures:
            future.result(timeout=60)

    # -- recovering and closing ------------------------------------------------------------

    def _signal(self, function: str, pid: int) -> None:
        with contextlib.suppress(psycopg.Error):  # the backend may already be gone
            self.monitor.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier(function)),
                                 (pid,))

    def stop_inflight(self) -> None:
        """Cancel every running or waiting step, terminating backends that ignore it."""
        inflight = [lv for lv in self.lives.values() if lv.future is not None]
        for function in ("pg_cancel_backend", "pg_terminate_backend"):
            stuck = [lv for lv in inflight if lv.future is not None and not lv.future.done()]
            if not stuck:
                break
            if function == "pg_terminate_backend":
                self.broken = True  # those sessions lose their connection: reopen all
            for live in stuck:
                self._signal(function, live.pid)
            wait_futures([lv.future for lv in stuck if lv.future is not None], timeout=5)
        for live in inflight:
            if live.future is not None and not live.future.done():
                self.broken = True  # a thread we cannot get back: do not reuse anything
            live.clear()

    def rollback_all(self) -> None:
        """End every session's transaction so the next permutation starts clean."""
        def rollback(live: Live) -> None:
            try:
                if live.sa is not None and live.sa.in_transaction():
                    live.sa.rollback()
                if live.conn is not None:
                    live.conn.rollback()
            except Exception:
                self.broken = True

        futures = [lv.executor.submit(rollback, lv) for lv in self.lives.values()
                   if lv.conn is not None and not self.broken]
        for future in futures:
            future.result(timeout=30)

    def open_transactions(self) -> list[Live]:
        """Sessions whose transaction is still open (or failed and not rolled back)."""
        return [lv for lv in self.lives.values() if lv.conn is not None
                and lv.conn.info.transaction_status != _IDLE]

    def close(self) -> None:
        """Close every connection and wait for their backends to leave pg_stat_activity."""
        self.stop_inflight()
        pids = [lv.pid for lv in self.lives.values() if lv.pid]
        for live in self.lives.values():
            try:
                if live.sa is not None:
                    live.sa.close()
            except Exception:  # pragma: no cover - closing anyway
                pass
            if live.conn is not None:
                live.conn.close()
            live.executor.shutdown(wait=False, cancel_futures=True)
        self.lives.clear()
        try:
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                row = self.monitor.execute("SELECT count(*) FROM pg_stat_activity "
                                           "WHERE pid = ANY(%s)", (pids,)).fetchone()
                if not row or not row[0]:
                    break
                time.sleep(0.002)
        except psycopg.Error:  # pragma: no cover - the server went away
            pass
        finally:
            if self.monitor_sa is not None:
                self.monitor_sa.close()
            self.monitor.close()
            if self._engine is not None:
                self._engine.dispose()
