"""What a scenario run produced: one :class:`StepResult` per step, readable as text.

The text form follows PostgreSQL's isolationtester output (a step that waited shows up
twice: when it was found waiting and ``<... completed>`` when it finished), holds no
pids, timings or transaction ids, and so can be snapshotted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, overload

from dbtest.errors import ConcurrencyError

__all__ = ["PermutationReport", "ScenarioResult", "StepResult"]

_OUTCOME_TEXT = {"ok": "ok", "serialization_failure": "serialization failure",
                 "deadlock": "deadlock", "error": "error"}


class StepResult:
    """The outcome of one step of a permutation.

    ``outcome`` is ``ok``, ``serialization_failure``, ``deadlock`` or ``error``;
    ``blocked`` says the step waited for a lock first (``blocked_by`` names the sessions
    it waited for). ``rows`` holds a SQL step's result rows (``None`` when it returned
    none), ``value`` a callable step's return value, ``error`` the exception of a step
    that failed in any way (serialization failure and deadlock included). ``repr()``
    shows only what is the same on every run (no timings), so it can be snapshotted.
    """

    def __init__(self, name: str, session: str, outcome: str, *, blocked: bool = False,
                 blocked_by: tuple[str, ...] = (), rows: list[tuple[Any, ...]] | None = None,
                 value: Any = None, exception: BaseException | None = None,
                 sqlstate: str | None = None, message: str = "",
                 detected_after: float | None = None, elapsed: float = 0.0) -> None:
        self.name = name
        self.session = session
        self.outcome = outcome
        self.blocked = blocked
        self.blocked_by = blocked_by
        self.rows = rows
        self.value = value
        self.exception = exception
        self.sqlstate = sqlstate
        self.message = message
        #: seconds from sending the step to seeing it wait for a lock
        self.detected_after = detected_after
        #: seconds from sending the step to its completion
        self.elapsed = elapsed

    def __repr__(self) -> str:
        parts = [repr(self.name), f"session={self.session!r}", f"outcome={self.outcome!r}"]
        if self.blocked:
            parts += ["blocked=True", f"blocked_by={self.blocked_by!r}"]
        if self.rows is not None:
            parts.append(f"rows={self.rows!r}")
        if self.value is not None:
            parts.append(f"value={self.value!r}")
        if not self.ok:
            parts += [f"sqlstate={self.sqlstate!r}", f"message={self.message!r}"]
        return f"StepResult({', '.join(parts)})"

    @property
    def ok(self) -> bool:
        """The step succeeded (possibly after waiting: check ``blocked``)."""
        return self.outcome == "ok"

    @property
    def serialization_failure(self) -> bool:
        """The step failed with SQLSTATE 40001 (could not serialize access)."""
        return self.outcome == "serialization_failure"

    @property
    def deadlock(self) -> bool:
        """PostgreSQL's deadlock detector chose this step as the victim (SQLSTATE 40P01)."""
        return self.outcome == "deadlock"

    @property
    def error(self) -> BaseException | None:
        """The exception of a failed step (any kind of failure), ``None`` when it succeeded."""
        return self.exception

    def describe(self) -> str:
        """The outcome in words: ``ok [(10,)]``, ``serialization failure (40001): ...``."""
        if self.ok:
            if self.rows is not None:
                return f"ok {self.rows!r}"
            return "ok" if self.value is None else f"ok -> {self.value!r}"
        code = f" ({self.sqlstate})" if self.sqlstate else ""
        return f"{_OUTCOME_TEXT[self.outcome]}{code}: {self.message}"


class ScenarioResult:
    """One permutation's results: ``result.step("s2_write").blocked`` and friends.

    ``str(result)`` (and ``repr``) is an isolationtester-style log, stable across runs.
    ``invalid`` explains why a generated permutation could not run (a session's next
    step had to wait for a lock only a later step could release); its steps stop there.
    """

    def __init__(self, permutation: tuple[str, ...], steps: list[StepResult],
                 events: list[str], invalid: str | None = None, elapsed: float = 0.0) -> None:
        self.permutation = permutation
        self.steps = steps
        self.events = events
        self.invalid = invalid
        #: seconds the permutation took (not part of the text)
        self.elapsed = elapsed

    def step(self, name: str) -> StepResult:
        """The result of step ``name``."""
        for result in self.steps:
            if result.name == name:
                return result
        known = ", ".join(s.name for s in self.steps) or "none"
        why = f" (the permutation was invalid: {self.invalid})" if self.invalid else ""
        raise ConcurrencyError(f"no result for step {name!r} in permutation "
                               f"{' '.join(self.permutation)!r}{why}; steps run: {known}")

    @property
    def ok(self) -> bool:
        """Every step succeeded and the permutation was valid."""
        return self.invalid is None and all(s.ok for s in self.steps)

    @property
    def blocked(self) -> list[str]:
        """Names of the steps that waited for a lock."""
        return [s.name for s in self.steps if s.blocked]

    @property
    def failed(self) -> list[str]:
        """Names of the steps that did not succeed."""
        return [s.name for s in self.steps if not s.ok]

    def kind(self) -> str:
        """One word for the report: ok, blocked, serialization_failure, deadlock, error, invalid."""
        if self.invalid is not None:
            return "invalid"
        for outcome in ("deadlock", "serialization_failure", "error"):
            if any(s.outcome == outcome for s in self.steps):
                return outcome
        return "blocked" if self.blocked else "ok"

    @property
    def text(self) -> str:
        """The isolationtester-style log."""
        lines = [f"permutation: {' '.join(self.permutation)}", *self.events]
        if self.invalid is not None:
            lines.append(f"invalid permutation: {self.invalid}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


class PermutationReport(Sequence[ScenarioResult]):
    """The results of several permutations, in the order they ran.

    ``str(report)`` starts with a summary (how many permutations ended in which way)
    followed by each permutation's log; both are stable and can be snapshotted.
    """

    def __init__(self, results: list[ScenarioResult]) -> None:
        self.results = results

    @overload
    def __getitem__(self, index: int) -> ScenarioResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[ScenarioResult]: ...

    def __getitem__(self, index: int | slice) -> ScenarioResult | list[ScenarioResult]:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ScenarioResult]:
        return iter(self.results)

    def counts(self) -> Counter[str]:
        """Permutations per kind (``ok``, ``blocked``, ``serialization_failure``, ...)."""
        return Counter(r.kind() for r in self.results)

    def where(self, kind: str) -> list[ScenarioResult]:
        """The permutations of one kind (see :meth:`ScenarioResult.kind`)."""
        return [r for r in self.results if r.kind() == kind]

    @property
    def valid(self) -> list[ScenarioResult]:
        """The permutations that could run to the end."""
        return [r for r in self.results if r.invalid is None]

    def summary(self) -> str:
        """``20 permutations: 6 ok, 2 blocked, 12 serialization_failure``."""
        order = ("ok", "blocked", "serialization_failure", "deadlock", "error", "invalid")
        counts = self.counts()
        parts = [f"{counts[k]} {k}" for k in order if counts[k]]
        noun = "permutation" if len(self.results) == 1 else "permutations"
        return f"{len(self.results)} {noun}: {', '.join(parts) or 'none'}"

    @property
    def text(self) -> str:
        """Summary plus every permutation's log."""
        return "\n\n".join([self.summary(), *(r.text for r in self.results)])

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text
