"""Running one permutation, isolationtester style.

Each step is sent to its session's thread. The runner then waits until nothing is running
any more: every in-flight step either finished or waits for a lock (seen through
``pg_blocking_pids`` on the control connection). Only then does the next step start, so
the order of events is the same on every run. A step whose session is still waiting
makes the runner wait for that session; if nothing could ever release it (its blockers
are idle sessions that only a later step would move), the permutation is a deadlock of
the script itself, reported with the lock graph.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING

from dbtest.concurrency._report import lock_graph, waits_for
from dbtest.concurrency._results import ScenarioResult, StepResult
from dbtest.concurrency._sessions import Connections, Live, run_action
from dbtest.concurrency._target import describe_error
from dbtest.errors import ConcurrencyError

if TYPE_CHECKING:
    from dbtest.concurrency._scenario import Action, Scenario, StepSpec

__all__ = ["PermutationRun", "ScriptDeadlock", "StepHang", "run_permutation"]

_FIRST_WAIT = 0.0003  # most steps finish within this; polling earlier would be wasted
_MAX_WAIT = 0.002  # the longest pause between two pg_blocking_pids polls


class ScriptDeadlock(ConcurrencyError):
    """The permutation cannot go on: a step waits for a session only a later step moves."""

    def __init__(self, reason: str, graph: str) -> None:
        super().__init__(f"{reason}\nlock graph (who waits on whom):\n{graph}")
        self.reason = reason
        self.graph = graph


class StepHang(ConcurrencyError):
    """A step (or the wait for one, or the whole permutation) ran out of time."""


def _succeeded(live: Live) -> bool:
    return live.future is not None and live.future.result().outcome == "ok"


class PermutationRun:
    """The state of one permutation while it runs."""

    def __init__(self, conns: Connections, steps: dict[str, StepSpec],
                 permutation: tuple[str, ...], *, step_timeout: float,
                 timeout: float) -> None:
        self.conns = conns
        self.steps = steps
        self.permutation = permutation
        self.step_timeout = step_timeout
        self.timeout = timeout
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.results: dict[int, StepResult] = {}
        self.events: list[str] = []

    # -- the main loop ---------------------------------------------------------------------

    def run(self) -> ScenarioResult:
        for position, name in enumerate(self.permutation):
            step = self.steps[name]
            live = self.conns.lives[step.session]
            if live.future is not None:
                busy = live.step.name if live.step is not None else "?"
                self._wait_for(live, f"step {name} is next, but session {live.name} is "
                                     f"still waiting in step {busy}")
            live.start(step, position)
            self._settle()
        for live in self._inflight():
            busy = live.step.name if live.step is not None else "?"
            self._wait_for(live, f"the permutation ended while step {busy} (session "
                                 f"{live.name}) was still waiting")
        return self.result()

    def result(self, invalid: str | None = None) -> ScenarioResult:
        steps = [self.results[i] for i in sorted(self.results)]
        return ScenarioResult(self.permutation, steps, list(self.events), invalid,
                              time.monotonic() - self.started)

    def _inflight(self) -> list[Live]:
        return [lv for lv in self.conns.lives.values() if lv.future is not None]

    def _settle(self) -> None:
        """Return once every in-flight step has finished or waits for a lock.

        Finished steps are recorded only then, when nothing runs any more, so which
        steps finished "together" does not depend on how threads were scheduled.
        """
        pause = _FIRST_WAIT
        while True:
            running = [lv.future for lv in self._inflight()
                       if lv.future is not None and not lv.waiting and not lv.future.done()]
            if running:
                wait_futures(running, timeout=pause, return_when=FIRST_COMPLETED)
                pause = min(pause * 2, _MAX_WAIT)
            pending = [lv for lv in self._inflight()
                       if lv.future is not None and not lv.future.done()]
            graph = waits_for(self.conns.monitor, [lv.pid for lv in pending])
            now = time.monotonic()
            still_running = []
            for live in pending:
                blockers = graph.get(live.pid) or []
                if blockers:
                    if not live.waiting:
                        self._mark_waiting(live, blockers, now)
                else:
                    if live.waiting:  # its blocker let go: it runs again
                        live.waiting, live.since = False, now
                    still_running.append(live)
            if not still_running:
                self._collect()
                return
            self._check_time(still_running, now)

    def _wait_for(self, live: Live, why: str) -> None:
        """Wait until ``live``'s in-flight step finished (it is waiting for a lock)."""
        began = time.monotonic()
        while live.future is not None:
            self._settle()
            if live.future is None:
                return
            inflight = self._inflight()
            graph = waits_for(self.conns.monitor, [lv.pid for lv in inflight])
            if not self._can_progress(live.pid, graph, frozenset()):
                raise ScriptDeadlock(why + self._stuck_hint(live, graph), self._graph())
            now = time.monotonic()
            if now - began > self.step_timeout or now > self.deadline:
                limit = ("step_timeout", self.step_timeout) if now <= self.deadline else (
                    "timeout", self.timeout)
                raise StepHang(f"{why}; it did not finish within {limit[1]} s ({limit[0]}). "
                               f"Lock graph (who waits on whom):\n{self._graph()}")
            wait_futures([lv.future for lv in inflight if lv.future is not None],
                         timeout=_MAX_WAIT, return_when=FIRST_COMPLETED)

    # -- bookkeeping -----------------------------------------------------------------------

    def _collect(self) -> None:
        """Record the steps that finished: the step just sent first, then waiting ones.

        Threads see their results in an order the GIL decides, so the order is fixed here
        as isolationtester fixes it: of waiting steps that finished together the failed
        ones come first (a failure ends its transaction, releasing the locks the others
        waited for: the deadlock victim comes before the step it unblocked), then
        permutation order.
        """
        inflight = self._inflight()
        done = [lv for lv in inflight if lv.future is not None and lv.future.done()]
        done.sort(key=lambda lv: (lv.was_blocked, _succeeded(lv), lv.position))
        for live in done:
            assert live.future is not None and live.step is not None
            d = live.future.result()
            result = StepResult(
                live.step.name, live.name, d.outcome, blocked=live.was_blocked,
                blocked_by=live.blocked_by, rows=d.rows, value=d.value, exception=d.exception,
                sqlstate=d.sqlstate, message=d.message, detected_after=live.detected_after,
                elapsed=d.finished - live.sent)
            self.results[live.position] = result
            completed = "<... completed> " if live.was_blocked else ""
            self.events.append(f"{live.step.name}: {completed}{result.describe()}")
            live.clear()

    def _name_of(self, pid: int) -> str:
        for live in self.conns.lives.values():
            if live.pid == pid:
                return live.name
        return "another connection"

    def _mark_waiting(self, live: Live, blockers: list[int], now: float) -> None:
        assert live.step is not None
        names = tuple(sorted({self._name_of(b) for b in blockers}))
        live.waiting, live.since = True, now
        if not live.was_blocked:
            live.detected_after = now - live.sent
        live.was_blocked = True
        live.blocked_by = tuple(sorted(set(live.blocked_by) | set(names)))
        self.events.append(f"{live.step.name}: waiting (blocked by {', '.join(names)})")

    def _check_time(self, running: list[Live], now: float) -> None:
        for live in running:
            if now - live.since > self.step_timeout or now > self.deadline:
                limit = ("step_timeout", self.step_timeout) if now <= self.deadline else (
                    "timeout", self.timeout)
                name = live.step.name if live.step is not None else "?"
                raise StepHang(
                    f"step {name} (session {live.name}) neither finished nor waited for a "
                    f"lock within {limit[1]} s ({limit[0]}); raise {limit[0]}= if it is just "
                    f"slow. Lock graph (who waits on whom):\n{self._graph()}")

    def _can_progress(self, pid: int, graph: dict[int, list[int]],
                      seen: frozenset[int]) -> bool:
        live = next((lv for lv in self.conns.lives.values() if lv.pid == pid), None)
        if live is None or live.self_ending:
            return True  # another connection, or a timeout will end the wait by itself
        if live.future is None:
            return False  # idle in transaction: only a later step of this session moves it
        blockers = graph.get(pid) or []
        if not blockers or pid in seen:
            # running, or a cycle of waiting sessions that PostgreSQL's deadlock detector
            # will break after deadlock_timeout
            return True
        return any(self._can_progress(b, graph, seen | {pid}) for b in blockers)

    def _stuck_hint(self, live: Live, graph: dict[int, list[int]]) -> str:
        idle = sorted({self._name_of(b) for b in graph.get(live.pid) or []
                       if self._name_of(b) in self.conns.lives
                       and self.conns.lives[self._name_of(b)].future is None})
        if not idle:
            return ""
        who = ", ".join(idle)
        return (f", which waits for {who} (idle in transaction: only a later step of {who} "
                f"could release the lock). Reorder the permutation so that {who} commits or "
                f"rolls back first")

    def _graph(self) -> str:
        names = {lv.pid: lv.name for lv in self.conns.lives.values() if lv.pid}
        notes = {lv.pid: f"step {lv.step.name}" for lv in self.conns.lives.values()
                 if lv.step is not None}
        return lock_graph(self.conns.monitor, names, notes)


def _control(conns: Connections, action: Action | None, what: str) -> None:
    if action is None:
        return
    from psycopg import sql

    needs_sa = not isinstance(action, str | sql.Composable)
    try:
        run_action(conns.monitor, conns.control_sa() if needs_sa else None, action)
    except Exception as exc:
        raise ConcurrencyError(f"the scenario's {what} failed: {describe_error(exc)}") from exc


def _recover(conns: Connections, teardown: Action | None) -> None:
    conns.stop_inflight()
    conns.rollback_all()
    try:
        _control(conns, teardown, "teardown")
    except ConcurrencyError:
        conns.broken = True


def run_permutation(scenario: Scenario, conns: Connections, names: tuple[str, ...], *,
                    strict: bool) -> ScenarioResult:
    """Run ``names`` on ``conns``; ``strict=False`` records script deadlocks as invalid."""
    from psycopg import sql

    specs, steps = scenario.session_specs(), scenario.step_specs()
    used = [specs[s] for s in dict.fromkeys(steps[n].session for n in names)]
    needs_sa = {steps[n].session for n in names if steps[n].needs_sqlalchemy}
    needs_sa |= {s.name for s in used
                 if any(not isinstance(a, str | sql.Composable) for a in s.setup)}
    conns.ensure(used, needs_sa)
    _control(conns, scenario.setup, "setup")
    conns.session_setup(used)
    run = PermutationRun(conns, steps, names, step_timeout=scenario.step_timeout,
                         timeout=scenario.timeout)
    try:
        result = run.run()
    except ScriptDeadlock as exc:
        _recover(conns, scenario.teardown)
        if strict:
            raise ScriptDeadlock(f"permutation {' '.join(names)!r}: {exc.reason}",
                                 exc.graph) from None
        return run.result(invalid=exc.reason)
    except BaseException:
        _recover(conns, scenario.teardown)
        raise
    left_open = [lv for lv in conns.open_transactions() if lv.spec in used]
    if left_open:
        last = {r.session: r.name for r in result.steps}
        detail = "; ".join(f"session {lv.name} (last step {last.get(lv.name, '?')})"
                           for lv in left_open)
        first = left_open[0].name
        _recover(conns, scenario.teardown)
        raise ConcurrencyError(
            f"permutation {' '.join(names)!r} left a transaction open: {detail}. End every "
            f"session's transaction inside the permutation, e.g. "
            f"sc.step({first!r}, '{first}_commit', 'commit') as its last step.")
    _control(conns, scenario.teardown, "teardown")
    return result
