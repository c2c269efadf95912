"""What the database assertions cost, side by side with the hand-written checks (issue 7).

    python benchmarks/bench_assertions.py [--rounds N]

One throwaway server, the example schema (``migrations_example.models``) with dbtest's leak
triggers installed (as in a worker database), everything inside one savepoint-isolated
session as under the ``db`` fixture. Measured, interleaved round by round:

- ``track_changes`` around an empty block (its whole cost: a flush and two reads of the
  per-transaction counters) and around a Core bulk insert of 100 users, against the same
  insert bare and against the hand-written check guides show (``count(*)`` of the table
  before and after; of every table, to also prove the others untouched). Each insert runs
  in a savepoint rolled back after it, so the tables keep their size;
- ``assert_cascade`` of a user with a profile, 2 posts, 4 comments and an order of 2 items,
  both ways (the default for an ORM object) and database-only, against the hand-written
  test (ORM delete in a savepoint, ``count(*)`` of the 5 dependent tables before and after,
  rollback);
- smaller helpers for scale: ``assert_row_count``, ``assert_rows``, ``assert_aggregate``,
  ``count_queries`` around one statement.

Targets: ``track_changes`` <= 2 ms per block; ``assert_cascade`` <= 20 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _peers import machine_info, p90, print_load, print_table, verdict

import dbtest
from dbtest import _leaks as leaks
from migrations_example.models import (
    Base,
    Comment,
    Order,
    OrderItem,
    Post,
    Product,
    Profile,
    User,
)

TABLES = [t.name for t in Base.metadata.sorted_tables]
DEPENDENTS = ("profiles", "posts", "comments", "orders", "order_items")
_serial = count()


def _users(n: int) -> list[dict[str, str]]:
    return [{"email": f"b{i}@x.io", "username": f"b{i}", "password_hash": "x"}
            for i in (next(_serial) for _ in range(n))]


def _blog(session: Session) -> User:
    alice = User(email="alice@x.io", username="alice", password_hash="x")
    bob = User(email="bob@x.io", username="bob", password_hash="x")
    pen = Product(sku="P-1", name="pen", price=Decimal("2.50"), stock=10)
    order = Order(user=alice)
    posts = [Post(author=alice, title=f"t{i}", body="b") for i in range(2)]
    session.add_all([alice, bob, pen, order, Profile(user=alice, bio="hi"), *posts,
                     *(Comment(post=p, author=a, body="c") for p in posts for a in (alice, bob)),
                     *(OrderItem(order=order, product=pen, quantity=q, unit_price=pen.price)
                       for q in (1, 2))])
    session.flush()
    return alice


def _count_tables(session: Session, tables: tuple[str, ...] | list[str]) -> dict[str, int]:
    conn = session.connection()
    return {t: conn.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar_one() for t in tables}


def measure(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Run every case once per round, in the same order, and keep the seconds each took."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            started = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - started)
    return out


BENCHMARK = {"title": "Database assertions", "order": 45, "quick": ["--quick"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (300; quick 100)")
    parser.add_argument("--quick", action="store_true", help="100 rounds")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (100 if args.quick else 300)
    print("# bench_assertions: database assertions vs the hand-written checks\n")
    with dbtest.ephemeral_postgres() as server:
        server.create_database("bench_assertions")
        engine = create_engine(server.url_for("bench_assertions"), poolclass=NullPool)
        with engine.begin() as conn:
            Base.metadata.create_all(conn)
            leaks.install(conn)
        machine_info(server.version, [f"rounds: {args.rounds} per case, interleaved"])
        with dbtest.savepoint(engine) as session:
            results = _run(session, args.rounds)
        engine.dispose()
    print_load("at end")
    _report(results)
    return 0


def _run(session: Session, rounds: int) -> dict[str, list[float]]:
    from dbtest.assertions import Inserted

    alice = _blog(session)
    expect = {"profiles": 1, "posts": 2, "comments": 4, "orders": 1, "order_items": 2}

    def rolled_back(fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn`` in a savepoint rolled back after it: the tables keep their size."""
        def run() -> None:
            nested = session.begin_nested()
            try:
                fn()
            finally:
                nested.rollback()
        return run

    def bulk() -> None:
        session.execute(insert(User), _users(100))

    def tracked_empty() -> None:
        with dbtest.track_changes(session) as changes:
            pass
        assert changes == {}

    def tracked_bulk() -> None:
        with dbtest.track_changes(session) as changes:
            bulk()
        assert changes == {"users": Inserted(100)}

    def counted_one() -> None:
        before = _count_tables(session, ["users"])["users"]
        bulk()
        assert _count_tables(session, ["users"])["users"] == before + 100

    def counted_all() -> None:
        before = _count_tables(session, TABLES)
        bulk()
        after = _count_tables(session, TABLES)
        assert after["users"] == before["users"] + 100
        assert all(after[t] == before[t] for t in TABLES if t != "users")

    def cascade_both() -> None:
        dbtest.assert_cascade(session, alice, expect=expect)

    def cascade_db() -> None:
        dbtest.assert_cascade(session, alice, expect=expect, via="database")

    def cascade_by_hand() -> None:
        nested = session.begin_nested()
        try:
            before = _count_tables(session, DEPENDENTS)
            session.delete(alice)
            session.flush()
            after = _count_tables(session, DEPENDENTS)
            assert {t: before[t] - after[t] for t in DEPENDENTS} == expect
        finally:
            nested.rollback()

    posts_per_user = (select(User.username, func.count(Post.id))
                      .outerjoin(Post, Post.author_id == User.id).group_by(User.username)
                      .where(User.username.in_(["alice", "bob"])))

    def queries_one() -> None:
        with dbtest.count_queries(session) as queries:
            session.execute(select(User.id).where(User.username == "alice")).all()
        assert queries.count == 1

    def plain_one() -> None:
        session.execute(select(User.id).where(User.username == "alice")).all()

    conn = session.connection()
    cases: dict[str, Callable[[], Any]] = {
        "round trip: SELECT 1 (the unit)": lambda: conn.exec_driver_sql("SELECT 1").all(),
        "track_changes, empty block": tracked_empty,
        "bulk insert of 100 users, bare": rolled_back(bulk),
        "  the same inside track_changes": rolled_back(tracked_bulk),
        "  the same, count(*) of users before/after": rolled_back(counted_one),
        "  the same, count(*) of all 11 tables before/after": rolled_back(counted_all),
        "assert_cascade(user), orm + database (default)": cascade_both,
        "assert_cascade(user), via='database'": cascade_db,
        "by hand: ORM delete, count(*) of 5 tables, rollback": cascade_by_hand,
        "assert_row_count(users, where=...)": lambda: dbtest.assert_row_count(
            session, "users", 1, where={"username": "alice"}),
        "assert_rows(users, 2 rows)": lambda: dbtest.assert_rows(
            session, "users", [{"username": "alice"}, {"username": "bob"}]),
        "assert_aggregate(posts per user)": lambda: dbtest.assert_aggregate(
            session, posts_per_user),
        "one SELECT, bare": plain_one,
        "  the same inside count_queries": queries_one,
    }
    measure(cases, 5)  # warm up: caches, prepared catalog plans
    return measure(cases, rounds)


def _report(results: dict[str, list[float]]) -> None:
    med = {name: statistics.median(v) * 1000 for name, v in results.items()}
    targets = {"track_changes, empty block": 2.0,
               "assert_cascade(user), orm + database (default)": 20.0,
               "assert_cascade(user), via='database'": 20.0}
    unit = med["round trip: SELECT 1 (the unit)"]
    rows = []
    for name, values in results.items():
        target = targets.get(name)
        rows.append([name, f"{med[name]:.2f}", f"{p90(values) * 1000:.2f}",
                     f"{med[name] / unit:.1f}", f"<= {target:g}" if target else "",
                     verdict(med[name] <= target) if target else ""])
    print()
    print_table(["case", "median ms", "p90 ms", "round trips", "target ms", ""], rows)
    overhead = med["  the same inside track_changes"] - med["bulk insert of 100 users, bare"]
    print()
    for name, target in targets.items():
        print(f"{verdict(med[name] <= target)} {name} <= {target:g} ms (median): "
              f"{med[name]:.2f} ms ({med[name] / unit:.1f} round trips)")
    print(f"{verdict(overhead <= 2.0)} track_changes overhead on a bulk insert of 100 rows "
          f"<= 2 ms: {overhead:.2f} ms")
    print(f"track_changes overhead on the bulk insert: {overhead:.2f} ms per block "
          f"(target <= 2 ms: {verdict(overhead <= 2.0)}); count(*) of all tables by hand: "
          f"{med['  the same, count(*) of all 11 tables before/after'] - med['bulk insert of 100 users, bare']:.2f} ms")  # noqa: E501
    print(f"count_queries overhead around one statement: "
          f"{med['  the same inside count_queries'] - med['one SELECT, bare']:.3f} ms")


if __name__ == "__main__":
    sys.exit(main())
