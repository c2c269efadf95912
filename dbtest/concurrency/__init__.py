"""Concurrent transaction testing on real connections (``dbtest.concurrency``).

* :class:`Scenario` - sessions, named steps and deterministic interleavings
  (isolationtester style): blocked steps are detected through ``pg_blocking_pids``, and
  each step ends ok, blocked -> ok, in a serialization failure, a deadlock or an error.
* :func:`run_concurrently` - n workers with their own connections released at a barrier.
* :func:`check_anomalies` / :func:`assert_prevented` - the Hermitage anomalies (dirty
  write ... write skew) run against your own table, per isolation level.
"""

from __future__ import annotations

from dbtest.concurrency._anomalies import (
    ANOMALIES,
    HERMITAGE_POSTGRES,
    AnomalyOutcome,
    AnomalyReport,
    assert_prevented,
    check_anomalies,
)
from dbtest.concurrency._results import PermutationReport, ScenarioResult, StepResult
from dbtest.concurrency._scenario import ISOLATION_LEVELS, Scenario
from dbtest.concurrency._workers import WorkerError, WorkerResults, run_concurrently

__all__ = [
    "ANOMALIES",
    "HERMITAGE_POSTGRES",
    "ISOLATION_LEVELS",
    "AnomalyOutcome",
    "AnomalyReport",
    "PermutationReport",
    "Scenario",
    "ScenarioResult",
    "StepResult",
    "WorkerError",
    "WorkerResults",
    "assert_prevented",
    "check_anomalies",
    "run_concurrently",
]
