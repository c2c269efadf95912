"""The Hermitage anomalies, run against your own table, per isolation level.

Each check is a two-session :class:`~dbtest.concurrency.Scenario` on two rows ``x`` and
``y`` of a table (their numeric column set to 10 and 20 before every run, restored
afterwards), following Martin Kleppmann's Hermitage tests for PostgreSQL. Phantoms are
provoked by an UPDATE that makes a row match the predicate, so no INSERT into your table
is needed.

::

    report = check_anomalies(fresh_db.url, table="products", key="id", value="stock")
    assert not report.prevented("lost_update", "READ COMMITTED")
    print(report)       # the table: anomaly x isolation level, prevented / ALLOWED
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dbtest.concurrency._results import ScenarioResult
from dbtest.concurrency._scenario import ISOLATION_LEVELS, Scenario, normalize_level
from dbtest.concurrency._target import conninfo_for
from dbtest.errors import ConcurrencyError, DbAssertionError

__all__ = ["ANOMALIES", "HERMITAGE_POSTGRES", "AnomalyOutcome", "AnomalyReport",
           "assert_prevented", "check_anomalies"]

ANOMALIES = ("dirty_write", "dirty_read", "lost_update", "non_repeatable_read", "phantom",
             "read_skew", "write_skew")

_RU, _RC, _RR, _SER = ISOLATION_LEVELS
_WEAK = {_RU: False, _RC: False, _RR: True, _SER: True}
#: what PostgreSQL prevents, per anomaly and level (True = prevented), from Hermitage
HERMITAGE_POSTGRES: dict[str, dict[str, bool]] = {
    "dirty_write": dict.fromkeys(ISOLATION_LEVELS, True),
    "dirty_read": dict.fromkeys(ISOLATION_LEVELS, True),
    "lost_update": dict(_WEAK),
    "non_repeatable_read": dict(_WEAK),
    "phantom": dict(_WEAK),
    "read_skew": dict(_WEAK),
    "write_skew": {_RU: False, _RC: False, _RR: False, _SER: True},
}

_ALIASES = {"g0": "dirty_write", "g1a": "dirty_read", "aborted_read": "dirty_read",
            "p4": "lost_update", "fuzzy_read": "non_repeatable_read",
            "nonrepeatable_read": "non_repeatable_read", "p2": "non_repeatable_read",
            "pmp": "phantom", "phantom_read": "phantom", "g_single": "read_skew",
            "g2_item": "write_skew"}

_X, _Y = 10, 20  # the values of the two rows before each run
_READ_X = "SELECT {v} FROM {t} WHERE {k} = {x}"
_READ_Y = "SELECT {v} FROM {t} WHERE {k} = {y}"
_PREDICATE = "SELECT {k} FROM {t} WHERE {k} IN ({x}, {y}) AND {v} = 10 ORDER BY {k}"
_READ_BOTH = "SELECT {v} FROM {t} WHERE {k} IN ({x}, {y}) ORDER BY {k}"


def _set(row: str, value: int) -> str:
    return "UPDATE {t} SET {v} = " + str(value) + " WHERE {k} = {" + row + "}"


def _value(result: ScenarioResult, step: str) -> Any:
    rows = result.step(step).rows
    return rows[0][0] if rows else None


def _failed(result: ScenarioResult, *steps: str) -> str | None:
    for name in steps:
        step = result.step(name)
        if not step.ok:
            return f"{name.split('.', 1)[1]} failed ({step.describe()})"
    return None


def _judge_dirty_write(r: ScenarioResult) -> tuple[bool, str]:
    write = r.step("dirty_write.t2_write_x")
    if write.blocked:
        then = "" if write.ok else f", then failed ({write.describe()})"
        return True, f"t2's write waited until t1 committed{then}"
    if not write.ok:
        return True, f"t2's write failed ({write.describe()})"
    return False, "t2 overwrote a value t1 had written but not committed"


def _judge_dirty_read(r: ScenarioResult) -> tuple[bool, str]:
    seen = [_value(r, "dirty_read.t2_read_x"), _value(r, "dirty_read.t2_read_x_again")]
    if any(v is not None and v == 101 for v in seen):
        return False, "t2 read a value t1 wrote and then rolled back"
    return True, "t2 only read the committed value"


def _judge_lost_update(r: ScenarioResult) -> tuple[bool, str]:
    failed = _failed(r, "lost_update.t2_write_x", "lost_update.t2_commit")
    if failed:
        return True, failed
    return False, "both read-modify-writes committed: t1's update was lost"


def _judge_repeat(first: str, second: str, allowed: str) -> Callable[[ScenarioResult],
                                                                   tuple[bool, str]]:
    def judge(r: ScenarioResult) -> tuple[bool, str]:
        failed = _failed(r, second)
        if failed:
            return True, failed
        if r.step(first).rows == r.step(second).rows:
            return True, "t1 read the same thing twice (its snapshot)"
        return False, allowed
    return judge


def _judge_read_skew(r: ScenarioResult) -> tuple[bool, str]:
    failed = _failed(r, "read_skew.t1_read_y")
    if failed:
        return True, failed
    y = _value(r, "read_skew.t1_read_y")
    if y == _Y:
        return True, "t1 read y as of its snapshot"
    return False, f"t1 read x before and y after t2's transfer ({_X} + {y} != {_X + _Y})"


def _judge_write_skew(r: ScenarioResult) -> tuple[bool, str]:
    failed = _failed(r, *(s.name for s in r.steps))
    if failed:
        return True, failed
    return False, "both committed writes based on reads the other changed"


@dataclass(frozen=True)
class _Check:
    steps: tuple[tuple[str, str, str], ...]  # (session, step, SQL template)
    permutation: tuple[str, ...]
    judge: Callable[[ScenarioResult], tuple[bool, str]]


_CHECKS: dict[str, _Check] = {
    "dirty_write": _Check(
        (("t1", "t1_write_x", _set("x", 11)), ("t1", "t1_write_y", _set("y", 21)),
         ("t1", "t1_commit", "COMMIT"), ("t2", "t2_write_x", _set("x", 12)),
         ("t2", "t2_write_y", _set("y", 22)), ("t2", "t2_commit", "COMMIT")),
        ("t1_write_x", "t2_write_x", "t1_write_y", "t1_commit", "t2_write_y", "t2_commit"),
        _judge_dirty_write),
    "dirty_read": _Check(
        (("t1", "t1_write_x", _set("x", 101)), ("t1", "t1_rollback", "ROLLBACK"),
         ("t2", "t2_read_x", _READ_X), ("t2", "t2_read_x_again", _READ_X),
         ("t2", "t2_commit", "COMMIT")),
        ("t1_write_x", "t2_read_x", "t1_rollback", "t2_read_x_again", "t2_commit"),
        _judge_dirty_read),
    "lost_update": _Check(
        (("t1", "t1_read_x", _READ_X), ("t1", "t1_write_x", _set("x", _X + 1)),
         ("t1", "t1_commit", "COMMIT"), ("t2", "t2_read_x", _READ_X),
         ("t2", "t2_write_x", _set("x", _X + 1)), ("t2", "t2_commit", "COMMIT")),
        ("t1_read_x", "t2_read_x", "t1_write_x", "t2_write_x", "t1_commit", "t2_commit"),
        _judge_lost_update),
    "non_repeatable_read": _Check(
        (("t1", "t1_read_x", _READ_X), ("t1", "t1_read_x_again", _READ_X),
         ("t1", "t1_commit", "COMMIT"), ("t2", "t2_write_x", _set("x", 12)),
         ("t2", "t2_commit", "COMMIT")),
        ("t1_read_x", "t2_write_x", "t2_commit", "t1_read_x_again", "t1_commit"),
        _judge_repeat("non_repeatable_read.t1_read_x", "non_repeatable_read.t1_read_x_again",
                      "t1's second read saw t2's committed change")),
    "phantom": _Check(
        (("t1", "t1_query", _PREDICATE), ("t1", "t1_query_again", _PREDICATE),
         ("t1", "t1_commit", "COMMIT"), ("t2", "t2_write_y", _set("y", _X)),
         ("t2", "t2_commit", "COMMIT")),
        ("t1_query", "t2_write_y", "t2_commit", "t1_query_again", "t1_commit"),
        _judge_repeat("phantom.t1_query", "phantom.t1_query_again",
                      "t1's repeated query returned a row that newly matched it")),
    "read_skew": _Check(
        (("t1", "t1_read_x", _READ_X), ("t1", "t1_read_y", _READ_Y),
         ("t1", "t1_commit", "COMMIT"), ("t2", "t2_write_x", _set("x", _X + 2)),
         ("t2", "t2_write_y", _set("y", _Y - 2)), ("t2", "t2_commit", "COMMIT")),
        ("t1_read_x", "t2_write_x", "t2_write_y", "t2_commit", "t1_read_y", "t1_commit"),
        _judge_read_skew),
    "write_skew": _Check(
        (("t1", "t1_read", _READ_BOTH), ("t1", "t1_write_x", _set("x", _X + 1)),
         ("t1", "t1_commit", "COMMIT"), ("t2", "t2_read", _READ_BOTH),
         ("t2", "t2_write_y", _set("y", _Y + 1)), ("t2", "t2_commit", "COMMIT")),
        ("t1_read", "t2_read", "t1_write_x", "t2_write_y", "t1_commit", "t2_commit"),
        _judge_write_skew),
}


def normalize_anomaly(name: str) -> str:
    """``"Lost update"`` -> ``"lost_update"``; unknown names raise."""
    key = "_".join(str(name).lower().replace("-", " ").replace("_", " ").split())
    key = _ALIASES.get(key, key)
    if key not in _CHECKS:
        raise ConcurrencyError(f"unknown anomaly {name!r}; known: {', '.join(ANOMALIES)}")
    return key


@dataclass(frozen=True)
class AnomalyOutcome:
    """Whether PostgreSQL prevented one anomaly at one isolation level, and how."""

    anomaly: str
    isolation_level: str
    prevented: bool
    how: str
    #: what Hermitage documents for PostgreSQL
    expected: bool
    result: ScenarioResult = field(repr=False)

    @property
    def matches_hermitage(self) -> bool:
        """The observed outcome is the one Hermitage documents."""
        return self.prevented == self.expected


class AnomalyReport:
    """Anomaly x isolation level -> :class:`AnomalyOutcome`; ``str()`` draws the table.

    ``repr()`` is the table too, so ``assert report == snapshot`` stores it readably.
    """

    def __init__(self, table: str, anomalies: list[str], isolation_levels: list[str],
                 outcomes: dict[tuple[str, str], AnomalyOutcome]) -> None:
        self.table = table
        self.anomalies = anomalies
        self.isolation_levels = isolation_levels
        self.outcomes = outcomes

    def outcome(self, anomaly: str, isolation_level: str) -> AnomalyOutcome:
        """The outcome of one check (names are normalised: ``"lost update"`` works)."""
        key = (normalize_anomaly(anomaly), normalize_level(isolation_level))
        if key not in self.outcomes:
            raise ConcurrencyError(f"{key[0]} at {key[1]} was not checked; checked: "
                                   f"{', '.join(self.anomalies)} at "
                                   f"{', '.join(self.isolation_levels)}")
        return self.outcomes[key]

    def prevented(self, anomaly: str, isolation_level: str) -> bool:
        """PostgreSQL prevented ``anomaly`` at ``isolation_level``."""
        return self.outcome(anomaly, isolation_level).prevented

    def allowed_at(self, isolation_level: str) -> list[str]:
        """The anomalies that happened at ``isolation_level``."""
        level = normalize_level(isolation_level)
        return [a for a in self.anomalies if not self.outcomes[(a, level)].prevented]

    def differences(self) -> list[AnomalyOutcome]:
        """Outcomes that differ from what Hermitage documents for PostgreSQL."""
        return [o for o in self.outcomes.values() if not o.matches_hermitage]

    @property
    def matches_hermitage(self) -> bool:
        """Every outcome is the one Hermitage documents."""
        return not self.differences()

    @property
    def text(self) -> str:
        """The table: one row per anomaly, one column per level."""
        width = max(len("anomaly"), *(len(a) for a in self.anomalies)) + 2
        head = "anomaly".ljust(width) + "".join(lv.ljust(18) for lv in self.isolation_levels)
        lines = [f"anomalies on {self.table}:", head.rstrip()]
        for anomaly in self.anomalies:
            cells = ["prevented" if self.outcomes[(anomaly, lv)].prevented else "ALLOWED"
                     for lv in self.isolation_levels]
            lines.append((anomaly.replace("_", " ").ljust(width)
                          + "".join(c.ljust(18) for c in cells)).rstrip())
        return "\n".join(lines)

    def explain(self, anomaly: str, isolation_level: str) -> str:
        """How the check went, with the permutation's log."""
        o = self.outcome(anomaly, isolation_level)
        verdict = "prevented" if o.prevented else "ALLOWED"
        return f"{o.anomaly} at {o.isolation_level}: {verdict} - {o.how}\n{o.result.text}"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def check_anomalies(target: Any, *, table: str | None = None, key: str = "id",
                    value: str = "value", keys: tuple[Any, Any] | None = None,
                    anomalies: Iterable[str] | None = None,
                    isolation_levels: Iterable[str] | None = None,
                    step_timeout: float = 10.0) -> AnomalyReport:
    """Run the Hermitage checks and report, per isolation level, what PostgreSQL prevented.

    ``table`` (``"schema.name"`` allowed) with its ``key`` column and a numeric ``value``
    column is your own table; two of its rows (``keys``, default: the first two by key)
    are set to 10 and 20 before each check and restored afterwards. Without ``table`` a
    throwaway table is created and dropped. The database must accept real commits
    (use ``fresh_db``).
    """
    from dbtest.concurrency._anomaly_table import prepared_table

    conninfo = conninfo_for(target, "check_anomalies")
    names = list(dict.fromkeys(normalize_anomaly(a) for a in (anomalies or ANOMALIES)))
    levels = list(dict.fromkeys(normalize_level(lv)
                                for lv in (isolation_levels or ISOLATION_LEVELS)))
    outcomes: dict[tuple[str, str], AnomalyOutcome] = {}
    suffix = secrets.token_hex(3)
    with prepared_table(conninfo, table, key, value, keys, f"dbtest_anomalies_{suffix}",
                        (_X, _Y)) as prepared:
        sc = Scenario(conninfo, setup=prepared.reset, step_timeout=step_timeout)
        for name in names:
            for session, step, template in _CHECKS[name].steps:
                sc.step(session, f"{name}.{step}", prepared.render(template))
        with sc:
            for name in names:
                check = _CHECKS[name]
                for level in levels:
                    sc.session("t1", isolation_level=level)
                    sc.session("t2", isolation_level=level)
                    result = sc.run([f"{name}.{s}" for s in check.permutation])
                    prevented, how = check.judge(result)
                    outcomes[(name, level)] = AnomalyOutcome(
                        name, level, prevented, how, HERMITAGE_POSTGRES[name][level], result)
        label = prepared.label
    return AnomalyReport(label, names, levels, outcomes)


def _weakest_preventing(anomaly: str) -> str:
    return next(lv for lv in ISOLATION_LEVELS if HERMITAGE_POSTGRES[anomaly][lv])


def assert_prevented(target: Any, anomalies: str | Iterable[str], isolation_level: str,
                     **options: Any) -> AnomalyReport:
    """Fail unless PostgreSQL prevents each of ``anomalies`` at ``isolation_level``.

    Use it to pin the level your application runs at, e.g. ``assert_prevented(
    fresh_db.url, ["lost_update"], "REPEATABLE READ", table="products", value="stock")``.
    ``options`` go to :func:`check_anomalies`.
    """
    __tracebackhide__ = True
    wanted = [anomalies] if isinstance(anomalies, str) else list(anomalies)
    report = check_anomalies(target, anomalies=wanted, isolation_levels=[isolation_level],
                             **options)
    level = normalize_level(isolation_level)
    allowed = [report.outcomes[(a, level)] for a in report.anomalies
               if not report.outcomes[(a, level)].prevented]
    if allowed:
        lines = [f"at {level} PostgreSQL allowed {len(allowed)} anomal"
                 f"{'y' if len(allowed) == 1 else 'ies'} on {report.table}:"]
        for o in allowed:
            lines.append(f"  {o.anomaly}: {o.how}. Fix: run at "
                         f"{_weakest_preventing(o.anomaly)} or stronger, or lock the rows "
                         f"you read (SELECT ... FOR UPDATE).")
        raise DbAssertionError("\n".join(lines))
    return report
