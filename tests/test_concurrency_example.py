"""The example app's order path under concurrency: place_order is safe, the naive one is not.

Two customers order the last item in stock at the same time. ``place_order`` locks the
product row (``SELECT ... FOR UPDATE``), so the second order waits, then sees the stock is
gone. ``place_order_unsafe`` reads without a lock and writes back a stale stock: an
oversell under READ COMMITTED, a serialization failure under REPEATABLE READ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from dbtest.concurrency import Scenario
from migrations_example.services import place_order, place_order_unsafe

RESET = "DELETE FROM orders; UPDATE products SET stock = 1 WHERE sku = 'LAST'"
SOLD = ("SELECT coalesce(sum(i.quantity), 0) FROM order_items i "
        "JOIN products p ON p.id = i.product_id WHERE p.sku = 'LAST'")
RACE = "s1_order s2_order s1_commit s2_commit"


@pytest.fixture
def shop(fresh_db: Any) -> Any:
    """Two customers and one product with a single item left."""
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, username, password_hash) VALUES "
                     "('ann@example.com', 'ann', 'x'), ('bob@example.com', 'bob', 'x')")
        conn.execute("INSERT INTO products (sku, name, price, stock) VALUES "
                     "('LAST', 'The last one', 10.00, 1)")
    return fresh_db


def orders(shop: Any, place: Callable[..., Any], level: str = "READ COMMITTED",
           sold: list[int] | None = None) -> Scenario:
    """Each session places an order for the last item, then commits."""
    def record(conn: Connection) -> None:
        if sold is not None:
            sold.append(conn.execute(text(SOLD)).scalar_one())

    sc = Scenario(shop.url, setup=RESET, teardown=record)
    for name, user in (("s1", 1), ("s2", 2)):
        def order(conn: Connection, user: int = user) -> str:
            session = Session(conn)  # joins the scenario session's transaction
            created = place(session, user, [("LAST", 1)])
            return f"{len(created.items)} item(s) ordered"

        sc.session(name, isolation_level=level)
        sc.step(name, f"{name}_order", order)
        sc.step(name, f"{name}_commit", "COMMIT")
    return sc


def sold_and_stock(shop: Any) -> tuple[int, int]:
    with psycopg.connect(shop.dsn) as conn:
        sold = conn.execute(SOLD).fetchone()
        stock = conn.execute("SELECT stock FROM products WHERE sku = 'LAST'").fetchone()
    assert sold is not None and stock is not None
    return int(sold[0]), int(stock[0])


def test_unsafe_version_oversells(shop: Any) -> None:
    result = orders(shop, place_order_unsafe).run(RACE)
    assert result.step("s2_order").blocked and result.ok  # waited on s1's UPDATE, then won
    assert sold_and_stock(shop) == (2, 0)  # two items sold, one was in stock


def test_safe_version_serialises_the_orders(shop: Any) -> None:
    result = orders(shop, place_order).run(RACE)
    second = result.step("s2_order")
    assert second.blocked and second.blocked_by == ("s1",)
    assert second.outcome == "error" and second.message == (
        "OutOfStock: LAST: 1 requested, 0 in stock")
    assert str(result) == (
        "permutation: s1_order s2_order s1_commit s2_commit\n"
        "s1_order: ok -> '1 item(s) ordered'\n"
        "s2_order: waiting (blocked by s1)\n"
        "s1_commit: ok\n"
        "s2_order: <... completed> error: OutOfStock: LAST: 1 requested, 0 in stock\n"
        "s2_commit: ok")
    assert sold_and_stock(shop) == (1, 0)


def test_safe_version_never_oversells_in_any_interleaving(shop: Any) -> None:
    sold: list[int] = []
    report = orders(shop, place_order, sold=sold).run_all_permutations()
    # the second order always fails (sequential or not); two interleavings are invalid:
    # a session waits for the other's lock and its own commit comes next
    assert report.summary() == "6 permutations: 4 error, 2 invalid"
    for result, units in zip(report, sold, strict=True):
        if result.invalid is None:
            assert units == 1, result
            assert [s.message for s in result.steps if not s.ok] == [
                "OutOfStock: LAST: 1 requested, 0 in stock"]


def test_unsafe_version_fixed_by_repeatable_read(shop: Any) -> None:
    sold: list[int] = []
    read_committed = orders(shop, place_order_unsafe, sold=sold).run_all_permutations()
    assert max(sold) == 2  # some interleaving oversells
    oversold = [r for r, units in zip(read_committed, sold, strict=True) if units == 2]
    assert [" ".join(r.permutation) for r in oversold] == [RACE, "s2_order s1_order "
                                                                 "s2_commit s1_commit"]
    sold.clear()
    repeatable = orders(shop, place_order_unsafe, "REPEATABLE READ", sold).run_all_permutations()
    assert max(sold) == 1
    assert repeatable.counts()["serialization_failure"] == 2
