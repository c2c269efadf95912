"""Scenario: deterministic interleavings of real sessions on a fresh database."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, text
from syrupy.extensions.amber.serializer import AmberDataSerializer

from dbtest.concurrency import Scenario
from dbtest.errors import ConcurrencyError

RESET = "DELETE FROM accounts; INSERT INTO accounts VALUES (1, 100), (2, 100)"


@pytest.fixture
def accounts(fresh_db: Any) -> Any:
    """fresh_db with an accounts(id, balance) table of two rows."""
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
        conn.execute("INSERT INTO accounts VALUES (1, 100), (2, 100)")
    return fresh_db


def balance(db: Any, account: int = 1) -> int:
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute("SELECT balance FROM accounts WHERE id = %s", (account,)).fetchone()
    assert row is not None
    return int(row[0])


def scenario_backends(db: Any, wait: bool = True) -> list[tuple[Any, ...]]:
    """Backends of scenarios still connected to ``db`` (waits up to 2 s for them to exit)."""
    deadline = time.monotonic() + (2 if wait else 0)
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        while True:
            rows = conn.execute("SELECT pid, application_name FROM pg_stat_activity WHERE "
                                "datname = current_database() AND application_name LIKE "
                                "'dbtest:%'").fetchall()
            if not rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.01)


def withdrawal(level: str, url: str) -> Scenario:
    """Two sessions that each read the balance and write back balance - 10."""
    sc = Scenario(url, setup=RESET)
    for name in ("s1", "s2"):
        seen: dict[str, int] = {}

        def read(conn: Connection, seen: dict[str, int] = seen) -> int:
            seen["balance"] = conn.execute(
                text("SELECT balance FROM accounts WHERE id = 1")).scalar_one()
            return seen["balance"]

        def write(conn: Connection, seen: dict[str, int] = seen) -> None:
            conn.execute(text("UPDATE accounts SET balance = :b WHERE id = 1"),
                         {"b": seen["balance"] - 10})

        sc.session(name, isolation_level=level)
        sc.step(name, f"{name}_read", read)
        sc.step(name, f"{name}_write", write)
        sc.step(name, f"{name}_commit", "COMMIT")
    return sc


LOST_UPDATE = "s1_read s2_read s1_write s2_write s1_commit s2_commit"


def test_lost_update_under_read_committed(accounts: Any) -> None:
    result = withdrawal("READ COMMITTED", accounts.url).run(LOST_UPDATE)
    assert result.step("s2_write").blocked
    assert result.step("s2_write").blocked_by == ("s1",)
    assert result.ok
    assert balance(accounts) == 90  # two withdrawals of 10, one of them lost


def test_serialization_failure_under_repeatable_read(accounts: Any) -> None:
    result = withdrawal("REPEATABLE READ", accounts.url).run(LOST_UPDATE)
    write = result.step("s2_write")
    assert write.blocked and write.serialization_failure and not write.ok
    assert write.sqlstate == "40001"
    assert isinstance(write.error, Exception)
    assert balance(accounts) == 90  # only s1's withdrawal; s2 must retry
    assert repr(write) == (
        "StepResult('s2_write', session='s2', outcome='serialization_failure', blocked=True, "
        "blocked_by=('s1',), sqlstate='40001', message='could not serialize access due to "
        "concurrent update')")
    # what `assert result == snapshot` stores: the log, nothing that changes between runs
    assert AmberDataSerializer.serialize(result) == str(result)
    assert str(result) == (
        "permutation: s1_read s2_read s1_write s2_write s1_commit s2_commit\n"
        "s1_read: ok -> 100\n"
        "s2_read: ok -> 100\n"
        "s1_write: ok\n"
        "s2_write: waiting (blocked by s1)\n"
        "s1_commit: ok\n"
        "s2_write: <... completed> serialization failure (40001): could not serialize "
        "access due to concurrent update\n"
        "s2_commit: ok")


def test_blocked_step_detected_and_resumed(accounts: Any) -> None:
    sc = Scenario(accounts.url)
    sc.step("s1", "s1_lock", "SELECT balance FROM accounts WHERE id = 1 FOR UPDATE")
    sc.step("s1", "s1_commit", "COMMIT")
    sc.step("s2", "s2_update", "UPDATE accounts SET balance = 50 WHERE id = 1 "
                               "RETURNING balance")
    sc.step("s2", "s2_commit", "COMMIT")
    result = sc.run("s1_lock s2_update s1_commit s2_commit")
    update = result.step("s2_update")
    assert update.blocked and update.ok and update.rows == [(50,)]
    assert update.detected_after is not None and update.detected_after < update.elapsed
    assert result.events == ["s1_lock: ok [(100,)]", "s2_update: waiting (blocked by s1)",
                             "s1_commit: ok", "s2_update: <... completed> ok [(50,)]",
                             "s2_commit: ok"]
    assert not result.step("s1_lock").blocked
    assert balance(accounts) == 50
    assert scenario_backends(accounts) == []


def test_deadlock_detected_and_reported(accounts: Any) -> None:
    sc = Scenario(accounts.url)
    # as in isolationtester's deadlock specs: the session that closes the cycle checks for
    # deadlocks first, so it is the victim however slow the machine is (and it waits long
    # enough to be seen waiting even on a loaded machine)
    sc.session("s1", setup="SET deadlock_timeout = '10s'")
    sc.session("s2", setup="SET deadlock_timeout = '300ms'")
    sc.step("s1", "s1_a", "UPDATE accounts SET balance = 1 WHERE id = 1")
    sc.step("s1", "s1_b", "UPDATE accounts SET balance = 1 WHERE id = 2")
    sc.step("s1", "s1_end", "COMMIT")
    sc.step("s2", "s2_b", "UPDATE accounts SET balance = 2 WHERE id = 2")
    sc.step("s2", "s2_a", "UPDATE accounts SET balance = 2 WHERE id = 1")
    sc.step("s2", "s2_end", "COMMIT")
    result = sc.run("s1_a s2_b s1_b s2_a s1_end s2_end")
    assert result.step("s2_a").deadlock and result.step("s2_a").sqlstate == "40P01"
    assert result.step("s1_b").blocked and result.step("s1_b").ok
    assert result.kind() == "deadlock"
    assert result.events[-4:] == ["s2_a: <... completed> deadlock (40P01): deadlock detected",
                                  "s1_b: <... completed> ok", "s1_end: ok", "s2_end: ok"]
    assert (balance(accounts, 1), balance(accounts, 2)) == (1, 1)


def test_write_skew_under_repeatable_read_but_not_serializable(accounts: Any) -> None:
    """Two withdrawals each check that the sum of both accounts stays >= 150."""
    def run(level: str) -> Any:
        sc = Scenario(accounts.url, setup=RESET)
        for name, account in (("s1", 1), ("s2", 2)):
            sc.session(name, isolation_level=level)
            sc.step(name, f"{name}_check", "SELECT sum(balance) >= 150 FROM accounts")
            sc.step(name, f"{name}_take", f"UPDATE accounts SET balance = balance - 50 "
                                          f"WHERE id = {account}")
            sc.step(name, f"{name}_commit", "COMMIT")
        return sc.run("s1_check s2_check s1_take s2_take s1_commit s2_commit")

    skewed = run("REPEATABLE READ")
    assert skewed.ok and not skewed.blocked
    assert balance(accounts, 1) + balance(accounts, 2) == 100  # the invariant broke
    safe = run("SERIALIZABLE")
    assert [safe.step(s).outcome for s in ("s1_commit", "s2_take", "s2_commit")] == [
        "ok", "ok", "serialization_failure"]
    assert balance(accounts, 1) + balance(accounts, 2) == 150


def test_run_all_permutations_reports_each(accounts: Any) -> None:
    sc = withdrawal("REPEATABLE READ", accounts.url)
    report = sc.run_all_permutations()
    assert len(report) == 20 == len(sc.permutations())
    assert report.summary() == ("20 permutations: 2 ok, 12 serialization_failure, "
                                "6 invalid")
    assert report.counts()["invalid"] == 6
    invalid = report.where("invalid")[0]
    assert "only a later step of" in (invalid.invalid or "")
    assert str(report).startswith(report.summary() + "\n\npermutation: ")
    again = sc.run_all_permutations(["s1_read s1_write s1_commit s2_read s2_write s2_commit"])
    assert str(again[0]) == str(report[0])  # stable text: snapshot-able
    assert again[0].step("s2_read").value == 90
    assert scenario_backends(accounts) == []


def test_statements_callables_and_explicit_begin(accounts: Any) -> None:
    from sqlalchemy import column, select, table

    accounts_t = table("accounts", column("id"), column("balance"))
    sc = Scenario(accounts.url)
    sc.session("s1", autocommit=True, setup="SET lock_timeout = '5s'")
    sc.step("s1", "s1_begin", "BEGIN ISOLATION LEVEL SERIALIZABLE")
    sc.step("s1", "s1_level", "SHOW transaction_isolation; SELECT 1 AS one, 2 AS two")
    sc.step("s1", "s1_select", select(accounts_t.c.balance).where(accounts_t.c.id == 2))
    sc.step("s1", "s1_call", lambda conn: conn.connection.driver_connection.info.backend_pid)
    sc.step("s1", "s1_iso", "SHOW transaction_isolation")
    sc.step("s1", "s1_commit", "COMMIT")
    result = sc.run(["s1_begin", "s1_level", "s1_select", "s1_call", "s1_iso", "s1_commit"])
    assert result.step("s1_level").rows == [(1, 2)]  # the last statement's rows
    assert result.step("s1_select").rows == [(100,)]
    assert isinstance(result.step("s1_call").value, int)
    assert result.step("s1_iso").rows == [("serializable",)]


def test_connections_reused_inside_with_and_closed_after(accounts: Any) -> None:
    sc = Scenario(accounts.url)
    sc.step("s1", "s1_pid", "SELECT pg_backend_pid()")
    sc.step("s1", "s1_commit", "COMMIT")
    with sc:
        first = sc.run("s1_pid s1_commit").step("s1_pid").rows
        assert sc.run("s1_pid s1_commit").step("s1_pid").rows == first
        assert len(scenario_backends(accounts, wait=False)) == 2  # the session and the control one
    assert scenario_backends(accounts) == []
    assert sc.run("s1_pid s1_commit").step("s1_pid").rows != first  # reconnected


# -- bad input -------------------------------------------------------------------------------


@pytest.fixture
def two_sessions(accounts: Any) -> Scenario:
    sc = Scenario(accounts.url, step_timeout=2)
    sc.step("s1", "s1_lock", "SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
    sc.step("s1", "s1_commit", "COMMIT")
    sc.step("s2", "s2_update", "UPDATE accounts SET balance = 0 WHERE id = 1")
    sc.step("s2", "s2_commit", "COMMIT")
    return sc


@pytest.mark.parametrize(("permutation", "message"), [
    ("s1_lock s2_nope", "unknown step 's2_nope'"),
    ("s1_lock s2 s1_commit", "names session 's2' where a step is expected"),
    ("", "empty permutation"),
])
def test_unknown_steps_are_named(two_sessions: Scenario, permutation: str,
                                 message: str) -> None:
    with pytest.raises(ConcurrencyError, match=message):
        two_sessions.run(permutation)


def test_duplicate_step_and_bad_level(accounts: Any) -> None:
    sc = Scenario(accounts.url)
    sc.step("s1", "a", "SELECT 1")
    with pytest.raises(ConcurrencyError, match="'a' is already declared"):
        sc.step("s2", "a", "SELECT 2")
    with pytest.raises(ConcurrencyError, match="unknown isolation level 'SNAPSHOT'"):
        sc.session("s1", isolation_level="SNAPSHOT")
    with pytest.raises(ConcurrencyError, match="step 'b': expected SQL text"):
        sc.step("s1", "b", 42)


def test_transaction_left_open(two_sessions: Scenario, accounts: Any) -> None:
    with pytest.raises(ConcurrencyError, match=r"left a transaction open: session s1 "
                                               r"\(last step s1_lock\)"):
        two_sessions.run("s1_lock")
    assert scenario_backends(accounts) == []


def test_script_deadlock_shows_lock_graph(two_sessions: Scenario, accounts: Any) -> None:
    with pytest.raises(ConcurrencyError) as info:
        two_sessions.run("s1_lock s2_update s2_commit s1_commit")
    message = str(info.value)
    assert "step s2_commit is next, but session s2 is still waiting in step s2_update" in message
    assert "lock graph (who waits on whom):" in message
    assert "[step s2_update] waits for ShareLock on a transaction" in message
    assert "held by s1 (pid" in message and "running: UPDATE accounts SET balance = 0" in message
    assert scenario_backends(accounts) == []
    assert balance(accounts) == 100  # everything was rolled back


def test_lock_timeout_ends_a_wait_the_script_could_not(accounts: Any) -> None:
    """With lock_timeout set, waiting for an idle session is not a script deadlock."""
    sc = Scenario(accounts)  # fresh_db itself works too
    sc.session("s2", setup="SET lock_timeout = '100ms'")
    sc.step("s1", "s1_lock", "SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
    sc.step("s1", "s1_commit", "COMMIT")
    sc.step("s2", "s2_update", "UPDATE accounts SET balance = 0 WHERE id = 1")
    sc.step("s2", "s2_commit", "COMMIT")
    result = sc.run("s1_lock s2_update s2_commit s1_commit")
    update = result.step("s2_update")
    assert update.blocked and update.outcome == "error" and update.sqlstate == "55P03"
    assert update.message == "canceling statement due to lock timeout"
    assert balance(accounts) == 100


def test_hung_step_times_out_with_lock_graph(accounts: Any) -> None:
    sc = Scenario(accounts.url, step_timeout=0.3)
    sc.step("s1", "s1_sleep", "SELECT pg_sleep(30)")
    sc.step("s1", "s1_commit", "COMMIT")
    started = time.monotonic()
    with pytest.raises(ConcurrencyError, match=r"(?s)s1_sleep.*within 0.3 s \(step_timeout\)"
                                               r".*running: SELECT pg_sleep\(30\)"):
        sc.run("s1_sleep s1_commit")
    assert time.monotonic() - started < 10
    assert scenario_backends(accounts) == []


def test_wait_on_an_outside_lock_times_out(two_sessions: Scenario, accounts: Any) -> None:
    with psycopg.connect(accounts.dsn) as holder:
        holder.execute("SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
        two_sessions.step_timeout = 0.5
        with pytest.raises(ConcurrencyError, match=r"(?s)still waiting.*within 0.5 s.*"
                                                   r"held by another connection"):
            two_sessions.run("s2_update s2_commit")
    assert scenario_backends(accounts) == []


def test_savepoint_isolated_db_is_refused(db: Any, db_connection: Any) -> None:
    for target in (db, db_connection):
        with pytest.raises(ConcurrencyError, match="Use the fresh_db fixture"):
            Scenario(target)
    with pytest.raises(ConcurrencyError, match=r"not a PostgreSQL URL"):
        Scenario("mysql://nope")
