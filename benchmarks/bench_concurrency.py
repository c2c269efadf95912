"""What concurrency scenarios cost with dbtest, side by side with the peer approaches (issue 8).

    python benchmarks/bench_concurrency.py [--rounds N] [--quick]

On a throwaway server (``dbtest.ephemeral_postgres()``) and a database created on it, one
run measures:

- how long after a step blocks on a row lock it is seen blocked: dbtest's ``Scenario``
  (``pg_blocking_pids`` polled after 0.3 ms, then every <= 2 ms), isolationtester's rule
  (wait for the result up to 10 ms, then ask the server) emulated in Python, and a
  hand-written test that polls ``pg_stat_activity`` in a busy loop (a test that sleeps a
  fixed time instead takes that time by construction: not measured, as it would only
  measure its own constant);
- one permutation on a warm scenario (connections reused): 4 steps / 2 sessions without a
  wait, and the 6-step lost update (one step blocks) with its reset SQL; next to the floor
  (the same statements on two psycopg connections, no threads) and the same steps by hand
  in threads, each waited for by polling;
- the lost-update scenario's permutations: all 20 (6 are invalid: a session's next step
  waits for a lock only a later step could release) and the 14 valid ones, by dbtest
  (connecting included) and by PostgreSQL's own isolationtester binary on the same spec.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _peers  # a sibling file, not a package
from _peers import ms, p90, print_table, verdict

import dbtest
from dbtest.concurrency import Scenario

RESET = "DELETE FROM accounts; INSERT INTO accounts VALUES (1, 100), (2, 100)"
LOST_UPDATE = "s1_read s2_read s1_write s2_write s1_commit s2_commit"
FOUR_STEPS = "s1_read s2_write s1_commit s2_commit"


def lost_update(url: str, **kw: Any) -> Scenario:
    sc = Scenario(url, setup=RESET, **kw)
    for s in ("s1", "s2"):
        sc.session(s, isolation_level="REPEATABLE READ")
        sc.step(s, f"{s}_read", "SELECT balance FROM accounts WHERE id = 1")
        sc.step(s, f"{s}_write", "UPDATE accounts SET balance = 90 WHERE id = 1")
        sc.step(s, f"{s}_commit", "COMMIT")
    return sc


def blocking(url: str) -> Scenario:
    sc = Scenario(url)
    sc.step("s1", "s1_lock", "SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
    sc.step("s1", "s1_commit", "COMMIT")
    sc.step("s2", "s2_update", "UPDATE accounts SET balance = balance WHERE id = 1")
    sc.step("s2", "s2_commit", "COMMIT")
    sc.step("s1", "s1_read", "SELECT balance FROM accounts WHERE id = 2")
    sc.step("s2", "s2_write", "UPDATE accounts SET balance = 100 WHERE id = 2")
    return sc


# -- detection ----------------------------------------------------------------------------

def detect_dbtest(url: str, rounds: int) -> list[float]:
    with blocking(url) as sc:
        return [sc.run("s1_lock s2_update s1_commit s2_commit").step("s2_update")
                .detected_after or 0.0 for _ in range(rounds)]


def detect_by_thread(dsn: str, rounds: int, rule: str) -> list[float]:
    """Start the blocking UPDATE in a thread and find out that it blocks, peer style:
    ``isolationtester`` (its rule: wait 10 ms for the result, then ask the server) or
    ``poll`` (a hand-written test that asks ``pg_stat_activity`` in a loop until the
    waiter shows a lock wait: no sleep constant of its own to measure)."""
    import psycopg

    found = []
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as waiter, \
            psycopg.connect(dsn, autocommit=True) as monitor:
        pid = waiter.info.backend_pid
        for _ in range(rounds):
            holder.execute("SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
            thread = threading.Thread(target=waiter.execute, args=(
                "UPDATE accounts SET balance = balance WHERE id = 1",))
            sent = time.perf_counter()
            thread.start()
            if rule == "poll":
                while monitor.execute("SELECT wait_event_type FROM pg_stat_activity "
                                      "WHERE pid = %s", (pid,)).fetchone() != ("Lock",):
                    pass
            else:  # isolationtester: wait 10 ms for the result, then ask the server
                while True:
                    thread.join(0.010)
                    row = monitor.execute("SELECT pg_isolation_test_session_is_blocked("
                                          "%s, %s)", (pid, [holder.info.backend_pid])
                                          ).fetchone()
                    if row and row[0]:
                        break
            found.append(time.perf_counter() - sent)
            if not thread.is_alive():
                raise SystemExit("FAIL the UPDATE finished while the row lock was held")
            holder.commit()
            thread.join()
            waiter.commit()
    return found


# -- one permutation ----------------------------------------------------------------------

def permutation_dbtest(sc: Scenario, permutation: str, rounds: int) -> list[float]:
    with sc:
        sc.run(permutation)  # warm: connections open, threads started
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            sc.run(permutation)
            times.append(time.perf_counter() - started)
    return times


def permutation_floor(dsn: str, rounds: int) -> list[float]:
    """The 4 statements on two connections in one thread: no detection, no threads."""
    import psycopg

    times = []
    with psycopg.connect(dsn, autocommit=True) as c1, \
            psycopg.connect(dsn, autocommit=True) as c2:
        for _ in range(rounds):
            started = time.perf_counter()
            c1.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            c1.execute("SELECT balance FROM accounts WHERE id = 2").fetchall()
            c2.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            c2.execute("UPDATE accounts SET balance = 100 WHERE id = 2")
            c1.execute("COMMIT")
            c2.execute("COMMIT")
            times.append(time.perf_counter() - started)
    return times


def permutation_by_hand(dsn: str, rounds: int) -> list[float]:
    """The hand-written test without sleeps: each step in a thread of its session, then
    wait until it finished or shows a lock wait in ``pg_stat_activity``, then the next."""
    import psycopg

    times = []
    with psycopg.connect(dsn, autocommit=True) as c1, \
            psycopg.connect(dsn, autocommit=True) as c2, \
            psycopg.connect(dsn, autocommit=True) as monitor:
        for _ in range(rounds):
            started = time.perf_counter()
            for conn, sql in ((c1, "BEGIN ISOLATION LEVEL REPEATABLE READ"),
                              (c1, "SELECT balance FROM accounts WHERE id = 2"),
                              (c2, "BEGIN ISOLATION LEVEL REPEATABLE READ"),
                              (c2, "UPDATE accounts SET balance = 100 WHERE id = 2"),
                              (c1, "COMMIT"), (c2, "COMMIT")):
                if sql.startswith("BEGIN"):
                    conn.execute(sql)
                    continue
                thread = threading.Thread(target=conn.execute, args=(sql,))
                thread.start()
                pid = conn.info.backend_pid
                while thread.is_alive() and monitor.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        (pid,)).fetchone() != ("Lock",):
                    thread.join(0.0002)
                thread.join()
            times.append(time.perf_counter() - started)
    return times


# -- all permutations ---------------------------------------------------------------------

SPEC_HEAD = """\
setup { DELETE FROM accounts; INSERT INTO accounts VALUES (1, 100), (2, 100); }
"""
SPEC_SESSION = """\
session {s}
setup {{ BEGIN ISOLATION LEVEL REPEATABLE READ; }}
step {s}_read {{ SELECT balance FROM accounts WHERE id = 1; }}
step {s}_write {{ UPDATE accounts SET balance = 90 WHERE id = 1; }}
step {s}_commit {{ COMMIT; }}
"""


def isolationtester_path(bindir: str) -> Path | None:
    found = shutil.which("isolationtester")
    if found:
        return Path(found)
    # Debian/Ubuntu ship it with the server-dev files, next to the server's bindir
    candidate = Path(bindir).parent / "lib/pgxs/src/test/isolation/isolationtester"
    return candidate if bindir and candidate.exists() else None


def run_isolationtester(binary: Path, dsn: str, permutations: list[str]) -> float:
    spec = SPEC_HEAD + SPEC_SESSION.format(s="s1") + SPEC_SESSION.format(s="s2")
    spec += "".join(f"permutation {p}\n" for p in permutations)
    with tempfile.NamedTemporaryFile("w", suffix=".spec") as f:
        f.write(spec)
        f.flush()
        started = time.perf_counter()
        with open(f.name) as stdin:
            done = subprocess.run([str(binary), dsn], stdin=stdin, capture_output=True,
                                  text=True, timeout=600, check=False)
        elapsed = time.perf_counter() - started
    if done.returncode != 0 or "could not serialize" not in done.stdout:
        raise SystemExit(f"isolationtester failed ({done.returncode}):\n{done.stdout}\n"
                         f"{done.stderr}")
    return elapsed


BENCHMARK = {"title": "Concurrency scenarios", "order": 40, "quick": ["--quick"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (200; quick 50)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    rounds = args.rounds or (50 if args.quick else 200)
    runs = 3 if args.quick else 5  # whole permutation runs, the same for dbtest and the peer
    checks: list[str] = []
    with dbtest.ephemeral_postgres() as server:
        server.create_database("bench_concurrency")
        url, dsn = server.url_for("bench_concurrency"), server.dsn_for("bench_concurrency")
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
            conn.execute("INSERT INTO accounts VALUES (1, 100), (2, 100)")
        print("# bench_concurrency: concurrency scenarios, dbtest vs the peer approaches\n")
        _peers.machine_info(server.version, [f"rounds: {rounds}; whole-permutation runs: "
                                             f"{runs}, the same for every approach"])

        print("\n## A step that blocks on a row lock: time until it is seen blocked (ms)\n")
        ours = detect_dbtest(url, rounds)
        iso = detect_by_thread(dsn, rounds, "isolationtester")
        poll = detect_by_thread(dsn, rounds, "poll")
        rows = [("dbtest Scenario (pg_blocking_pids, 0.3 ms then <= 2 ms)", ours),
                ("isolationtester's rule (result wait 10 ms, then ask), emulated", iso),
                ("by hand: thread + pg_stat_activity polled in a busy loop", poll)]
        print_table(["approach", "median", "p90", "n"],
                    [(name, ms(statistics.median(v)), ms(p90(v)), str(len(v)))
                     for name, v in rows])
        detect_ok = statistics.median(ours) <= 0.010

        print("\n## One permutation on a warm scenario (ms)\n")
        four = permutation_dbtest(blocking(url), FOUR_STEPS, rounds)
        six = permutation_dbtest(lost_update(url), LOST_UPDATE, rounds)
        floor = permutation_floor(dsn, rounds)
        by_hand = permutation_by_hand(dsn, rounds)
        rows = [(f"dbtest: 4 steps, 2 sessions ({FOUR_STEPS})", four),
                ("dbtest: 6 steps, 2 sessions, lost update (1 blocks) + reset SQL", six),
                ("floor: the 4 statements (+BEGINs) on 2 connections, one thread", floor),
                ("by hand: the 4 steps in threads, each waited for by polling", by_hand)]
        print_table(["approach", "median", "p90", "n"],
                    [(name, ms(statistics.median(v)), ms(p90(v)), str(len(v)))
                     for name, v in rows])
        perm_ok = statistics.median(six) <= 0.030

        print(f"\n## The lost-update scenario's permutations (ms per whole run, connecting "
              f"included; median of {runs} runs)\n")
        every = [" ".join(p) for p in lost_update(url).permutations()]
        report = lost_update(url).run_all_permutations()
        valid = [" ".join(r.permutation) for r in report if r.invalid is None]
        if (len(every), len(valid)) != (20, 14):  # 6!/(3!3!) orders; 6 need a later step
            checks.append(f"lost update: {len(every)} permutations, {len(valid)} valid; "
                          f"expected 20 and 14")
        all_dbtest = [_peers.timed(lambda: lost_update(url).run_all_permutations())
                      for _ in range(runs)]
        valid_dbtest = [_peers.timed(lambda: lost_update(url).run_all_permutations(valid))
                        for _ in range(runs)]
        rows_all = [(f"dbtest run_all_permutations(): all {len(every)} "
                     f"({report.summary().split(': ', 1)[1]})", all_dbtest),
                    (f"dbtest run_all_permutations(the {len(valid)} valid)", valid_dbtest)]
        binary = isolationtester_path(str(server.details.get("bindir", "")))
        if binary is not None:
            took = [run_isolationtester(binary, dsn, valid) for _ in range(runs)]
            rows_all.append((f"PostgreSQL isolationtester, the same {len(valid)} "
                             f"(process + connections)", took))
        print_table(["approach", "median", "p90"],
                    [(name, ms(statistics.median(v)), ms(p90(v))) for name, v in rows_all])
        if binary is None:
            print("(PostgreSQL's isolationtester binary not found: install the server-dev "
                  "package to compare)")

        print("\n## Targets\n")
        print(f"{verdict(detect_ok)} a blocked step is detected <= 10 ms after it blocks "
              f"(median): {ms(statistics.median(ours))} ms (by hand, polling in a busy loop: "
              f"{ms(statistics.median(poll))} ms)")
        print(f"{verdict(perm_ok)} a 2-session, 6-step permutation <= 30 ms on a warm "
              f"database (median): {ms(statistics.median(six))} ms")
        print(f"HEADLINE a blocked step is seen in {ms(statistics.median(ours))} ms; the 14 "
              f"valid permutations of a lost update run in "
              f"{ms(statistics.median(valid_dbtest))} ms" + (
                  f" (PostgreSQL's isolationtester: {ms(statistics.median(took))} ms)"
                  if binary is not None else ""))
        _peers.print_load("at end")
    for check in checks:
        print(f"FAIL {check}")
    return 1 if checks else 0


if __name__ == "__main__":
    sys.exit(main())
