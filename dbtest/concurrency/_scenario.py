"""`Scenario`: sessions on real connections, named steps, and permutations to run.

::

    sc = Scenario(fresh_db.url)
    sc.session("s1", isolation_level="REPEATABLE READ")
    sc.step("s1", "s1_read", "select balance from accounts where id = 1")
    ...
    result = sc.run("s1_read s2_read s1_write s2_write s1_commit s2_commit")
    assert result.step("s2_write").blocked

Each session is one psycopg connection driven by its own thread. A step that waits for a
lock is seen waiting (``pg_blocking_pids``, as PostgreSQL's isolationtester does) and the
run moves on to the next step; the waiting step's outcome is recorded when it finishes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from dbtest.concurrency._results import PermutationReport, ScenarioResult
from dbtest.concurrency._target import conninfo_for
from dbtest.errors import ConcurrencyError

if TYPE_CHECKING:
    from dbtest.concurrency._sessions import Connections

__all__ = ["ISOLATION_LEVELS", "Scenario", "SessionSpec", "StepSpec", "normalize_level"]

_R = TypeVar("_R")

#: a step: SQL text, a psycopg ``sql.Composable``, a SQLAlchemy statement, or a callable
#: receiving the session's SQLAlchemy ``Connection``
Action = Any

ISOLATION_LEVELS = ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")

# Statements that must not be wrapped in the implicit BEGIN: they control the transaction
# themselves or cannot run inside one.
_NO_IMPLICIT_BEGIN = re.compile(
    r"^\s*(?:begin|start\s+transaction|commit|end|rollback|abort|prepare\s+transaction|"
    r"vacuum|checkpoint|discard|alter\s+system|create\s+database|drop\s+database|"
    r"create\s+(?:unique\s+)?index\s+concurrently|drop\s+index\s+concurrently|"
    r"reindex\s.*\bconcurrently)\b", re.IGNORECASE | re.DOTALL)
_LEADING_COMMENTS = re.compile(r"^(?:\s*--[^\n]*\n|\s*/\*.*?\*/)*", re.DOTALL)
_NAME = re.compile(r"^[^\s]+$")


def normalize_level(level: str) -> str:
    """``"repeatable_read"`` -> ``"REPEATABLE READ"``; unknown levels raise."""
    text = " ".join(str(level).replace("_", " ").replace("-", " ").upper().split())
    if text not in ISOLATION_LEVELS:
        raise ConcurrencyError(f"unknown isolation level {level!r}; use one of "
                               f"{', '.join(ISOLATION_LEVELS)}")
    return text


@dataclass
class SessionSpec:
    """A declared session: its isolation level, setup and steps (in declaration order)."""

    name: str
    isolation_level: str | None = None
    setup: tuple[Action, ...] = ()
    autocommit: bool = False
    steps: list[str] = field(default_factory=list)

    def begin_sql(self) -> str:
        """The implicit ``BEGIN`` sent before a step when the session is idle."""
        if self.isolation_level is None:
            return "BEGIN"
        return f"BEGIN ISOLATION LEVEL {self.isolation_level}"  # a validated keyword


@dataclass(frozen=True)
class StepSpec:
    """A declared step: ``kind`` is sql, composable, statement or callable."""

    name: str
    session: str
    action: Action
    kind: str
    implicit_begin: bool
    text: str

    @property
    def needs_sqlalchemy(self) -> bool:
        """The step runs through a SQLAlchemy Connection wrapped around the session's."""
        return self.kind in ("statement", "callable")


def _kind_of(action: Action, name: str) -> tuple[str, str]:
    if isinstance(action, str):
        if not action.strip():
            raise ConcurrencyError(f"step {name!r} has empty SQL; give it a statement")
        return "sql", action.strip()
    from psycopg import sql

    if isinstance(action, sql.Composable):
        return "composable", action.as_string(None)
    from sqlalchemy.sql.base import Executable

    if isinstance(action, Executable):
        return "statement", str(action)
    if callable(action):
        return "callable", getattr(action, "__qualname__", repr(action))
    raise ConcurrencyError(f"step {name!r}: expected SQL text, a SQLAlchemy statement or a "
                           f"callable taking the session's connection; got "
                           f"{type(action).__name__}")


def _implicit_begin(kind: str, text: str) -> bool:
    if kind not in ("sql", "composable"):
        return True
    return not _NO_IMPLICIT_BEGIN.match(_LEADING_COMMENTS.sub("", text))


def interleavings(lists: Sequence[Sequence[str]]) -> Iterator[tuple[str, ...]]:
    """Every merge of ``lists`` that keeps each list's own order (isolationtester's order)."""
    lists = [list(x) for x in lists if x]
    positions = [0] * len(lists)
    total = sum(len(x) for x in lists)
    chosen: list[str] = []

    def walk() -> Iterator[tuple[str, ...]]:
        if len(chosen) == total:
            yield tuple(chosen)
            return
        for i, items in enumerate(lists):
            if positions[i] < len(items):
                chosen.append(items[positions[i]])
                positions[i] += 1
                yield from walk()
                positions[i] -= 1
                chosen.pop()

    return walk()


class Scenario:
    """Concurrent sessions on real connections, stepped through a chosen interleaving.

    ``target`` is a URL (``fresh_db.url``), ``fresh_db`` itself, a libpq conninfo or an
    Engine; never the ``db`` session (its work is rolled back, so other sessions cannot see
    it). ``setup`` / ``teardown`` (SQL or a callable taking a SQLAlchemy Connection) run
    on a control connection before / after every permutation, e.g. to reset rows.

    Steps run inside the session's transaction: the first step after the session was idle
    is preceded by ``BEGIN ISOLATION LEVEL <level>``; end it with a ``commit`` or
    ``rollback`` step (a permutation that leaves a transaction open is an error).
    ``step_timeout`` bounds one step (or the wait for one), ``timeout`` a whole
    permutation; both fail with :class:`~dbtest.errors.ConcurrencyError` and the lock graph.
    ``deadlock_timeout`` is set on each session when the role may (superuser), so
    PostgreSQL reports deadlocks quickly. The victim is the first waiter whose timeout
    fires once the cycle exists; to pin it, give the sessions different values in their
    setup (``SET deadlock_timeout = '10s'`` on the survivor, ``'10ms'`` on the victim).

    Outside a ``with`` block each :meth:`run` opens and closes its connections; inside
    one (and within :meth:`run_all_permutations`) they are reused.
    """

    def __init__(self, target: Any, *, setup: Action | None = None,
                 teardown: Action | None = None, step_timeout: float = 10.0,
                 timeout: float = 60.0, deadlock_timeout: str | None = "100ms") -> None:
        self.conninfo = conninfo_for(target, "Scenario")
        self.setup = setup
        self.teardown = teardown
        self.step_timeout = step_timeout
        self.timeout = timeout
        self.deadlock_timeout = deadlock_timeout
        self._sessions: dict[str, SessionSpec] = {}
        self._steps: dict[str, StepSpec] = {}
        self._conns: Connections | None = None
        self._entered = False

    # -- declaring -------------------------------------------------------------------------

    def session(self, name: str, *, isolation_level: str | None = None,
                setup: Action | Sequence[Action] | None = None,
                autocommit: bool = False) -> Self:
        """Declare session ``name`` (or change its settings before the next run).

        ``setup`` (SQL, or a list of statements/callables) runs on the session's
        connection, outside any transaction, before every permutation. ``autocommit=True``
        sends no implicit ``BEGIN`` (each step is its own transaction unless it begins one).
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConcurrencyError(f"session name {name!r} must be a non-empty word without "
                                   f"spaces (permutations are split on spaces)")
        if name in self._steps:
            raise ConcurrencyError(f"{name!r} is already a step name; give the session "
                                   f"another name")
        level = normalize_level(isolation_level) if isolation_level is not None else None
        setups: tuple[Action, ...]
        if setup is None:
            setups = ()
        elif isinstance(setup, str) or not isinstance(setup, Sequence):
            setups = (setup,)
        else:
            setups = tuple(setup)
        for i, action in enumerate(setups):
            _kind_of(action, f"{name} setup #{i + 1}")
        spec = self._sessions.get(name)
        if spec is None:
            self._sessions[name] = SessionSpec(name, level, setups, autocommit)
        else:
            spec.isolation_level, spec.setup, spec.autocommit = level, setups, autocommit
        return self

    def step(self, session: str, name: str, action: Action) -> Self:
        """Declare step ``name`` of ``session`` (declared with defaults if new).

        ``action`` is SQL text (several statements allowed; the last result's rows are
        kept), a psycopg ``sql.Composable``, a SQLAlchemy statement, or a callable that
        receives the session's SQLAlchemy ``Connection`` (``Session(conn)`` joins the
        session's transaction; ``conn.connection.driver_connection`` is the psycopg one).
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConcurrencyError(f"step name {name!r} must be a non-empty word without "
                                   f"spaces (permutations are split on spaces)")
        if name in self._steps:
            other = self._steps[name].session
            raise ConcurrencyError(f"step {name!r} is already declared (session {other!r}); "
                                   f"step names must be unique across sessions: rename one")
        if name in self._sessions:
            raise ConcurrencyError(f"{name!r} is already a session name; give the step "
                                   f"another name")
        if session not in self._sessions:
            self.session(session)
        kind, text = _kind_of(action, name)
        self._steps[name] = StepSpec(name, session, action, kind,
                                     _implicit_begin(kind, text), text)
        self._sessions[session].steps.append(name)
        return self

    @property
    def sessions(self) -> list[str]:
        """Session names in declaration order."""
        return list(self._sessions)

    @property
    def steps(self) -> list[str]:
        """Step names in declaration order."""
        return list(self._steps)

    def permutations(self) -> list[tuple[str, ...]]:
        """Every interleaving of the sessions' steps that keeps each session's order."""
        return list(interleavings([s.steps for s in self._sessions.values()]))

    def parse(self, permutation: str | Iterable[str]) -> tuple[str, ...]:
        """Validate a permutation (string or list of step names) into a tuple."""
        names = tuple(permutation.split() if isinstance(permutation, str) else permutation)
        if not names:
            raise ConcurrencyError("empty permutation; name the steps to run, e.g. "
                                   "'s1_read s2_read s1_commit s2_commit'")
        for name in names:
            if name in self._steps:
                continue
            if name in self._sessions:
                own = ", ".join(self._sessions[name].steps) or "none declared"
                raise ConcurrencyError(f"permutation names session {name!r} where a step is "
                                       f"expected; its steps: {own}. Name one of them.")
            known = ", ".join(self._steps) or "none declared"
            raise ConcurrencyError(f"permutation names unknown step {name!r}; declare it "
                                   f"with sc.step(session, {name!r}, sql). Known steps: {known}")
        return names

    # -- connections -----------------------------------------------------------------------

    def open(self) -> None:
        """Open the control connection (sessions connect when a run first needs them)."""
        if self._conns is None:
            from dbtest.concurrency._sessions import Connections

            self._conns = Connections(self.conninfo, self.deadlock_timeout)

    def close(self) -> None:
        """Close every connection and wait until their backends are gone."""
        conns, self._conns = self._conns, None
        if conns is not None:
            conns.close()

    def __enter__(self) -> Self:
        self.open()
        self._entered = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._entered = False
        self.close()

    # -- running ---------------------------------------------------------------------------

    def run(self, permutation: str | Iterable[str]) -> ScenarioResult:
        """Run one permutation; raise :class:`ConcurrencyError` if it cannot finish."""
        names = self.parse(permutation)
        return self._with_connections(lambda: self._run_one(names, strict=True))

    def run_all_permutations(self, permutations: Iterable[str | Iterable[str]] | None = None,
                             *, limit: int = 10_000) -> PermutationReport:
        """Run every interleaving (or the given ``permutations``) and report each.

        A generated permutation in which a session's next step would have to wait for a
        lock that only a later step could release is recorded as ``invalid`` (as
        isolationtester does) instead of failing the whole report.
        """
        if permutations is None:
            chosen = []
            for perm in interleavings([s.steps for s in self._sessions.values()]):
                chosen.append(perm)
                if len(chosen) > limit:
                    raise ConcurrencyError(f"more than {limit} permutations; pass the ones "
                                           f"to run (permutations=[...]) or raise limit=")
        else:
            chosen = [self.parse(p) for p in permutations]
        if not chosen:
            raise ConcurrencyError("the scenario has no steps; declare some with sc.step()")
        for perm in chosen:
            self.parse(perm)

        def run_them() -> PermutationReport:
            return PermutationReport([self._run_one(p, strict=False) for p in chosen])

        return self._with_connections(run_them)

    def _with_connections(self, fn: Callable[[], _R]) -> _R:
        opened = self._conns is None
        self.open()
        try:
            return fn()
        finally:
            conns = self._conns
            if conns is not None and (conns.broken or (opened and not self._entered)):
                self.close()

    def _run_one(self, names: tuple[str, ...], *, strict: bool) -> ScenarioResult:
        from dbtest.concurrency._runner import run_permutation

        assert self._conns is not None
        return run_permutation(self, self._conns, names, strict=strict)

    # used by the runner
    def session_specs(self) -> dict[str, SessionSpec]:
        """Declared sessions by name."""
        return self._sessions

    def step_specs(self) -> dict[str, StepSpec]:
        """Declared steps by name."""
        return self._steps
