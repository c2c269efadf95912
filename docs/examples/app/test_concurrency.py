"""Examples of docs/concepts/concurrency.md, run by tests/test_docs.py."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from dbtest.concurrency import Scenario, assert_prevented, check_anomalies, run_concurrently
from migrations_example.services import place_order, place_order_unsafe


# --8<-- [start:scenario]
@pytest.fixture
def shop(fresh_db: Any) -> Any:
    """Two customers and a product with one item left, committed for real."""
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, username, password_hash) VALUES "
                     "('ann@example.org', 'ann', 'x'), ('bob@example.org', 'bob', 'x')")
        conn.execute("INSERT INTO products (sku, name, price, stock) "
                     "VALUES ('LAST', 'The last one', 10, 1)")
    return fresh_db


def two_orders(shop: Any, place: Any, level: str = "READ COMMITTED") -> Scenario:
    sc = Scenario(shop.url, setup="DELETE FROM orders; "
                                  "UPDATE products SET stock = 1 WHERE sku = 'LAST'")
    for name, user_id in (("s1", 1), ("s2", 2)):
        def order(conn: Connection, user_id: int = user_id) -> str:
            created = place(Session(conn), user_id, [("LAST", 1)])   # joins the session's txn
            return f"{len(created.items)} item(s) ordered"

        sc.session(name, isolation_level=level)
        sc.step(name, f"{name}_order", order)
        sc.step(name, f"{name}_commit", "COMMIT")
    return sc


def test_the_second_order_waits_then_fails(shop: Any) -> None:
    result = two_orders(shop, place_order).run("s1_order s2_order s1_commit s2_commit")
    second = result.step("s2_order")
    assert second.blocked and second.blocked_by == ("s1",)      # SELECT ... FOR UPDATE
    assert second.message == "OutOfStock: LAST: 1 requested, 0 in stock"
    assert str(result) == """\
permutation: s1_order s2_order s1_commit s2_commit
s1_order: ok -> '1 item(s) ordered'
s2_order: waiting (blocked by s1)
s1_commit: ok
s2_order: <... completed> error: OutOfStock: LAST: 1 requested, 0 in stock
s2_commit: ok"""
# --8<-- [end:scenario]


# --8<-- [start:permutations]
def test_no_interleaving_oversells(shop: Any) -> None:
    report = two_orders(shop, place_order).run_all_permutations()
    assert report.summary() == "6 permutations: 4 error, 2 invalid"


def test_the_naive_version_oversells(shop: Any) -> None:
    result = two_orders(shop, place_order_unsafe).run("s1_order s2_order s1_commit s2_commit")
    assert result.ok                                            # both orders went through
    with psycopg.connect(shop.dsn) as conn:
        assert conn.execute("SELECT stock FROM products").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)


def test_repeatable_read_turns_it_into_an_error(shop: Any) -> None:
    sc = two_orders(shop, place_order_unsafe, "REPEATABLE READ")
    result = sc.run("s1_order s2_order s1_commit s2_commit")
    assert result.step("s2_order").serialization_failure
# --8<-- [end:permutations]


# --8<-- [start:workers]
def test_ten_orders_at_once(shop: Any) -> None:
    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        conn.execute("UPDATE products SET stock = 5")

    def order(i: int, conn: Connection) -> int:
        with Session(conn) as session:
            try:
                place_order(session, 1 + i % 2, [("LAST", 1)])
                session.commit()
                return 1
            except Exception:
                session.rollback()
                return 0

    results = run_concurrently(order, 10, url=shop.url)
    assert sum(results) == 5                     # exactly the stock, never more
# --8<-- [end:workers]


# --8<-- [start:anomalies]
def test_what_each_level_prevents(shop: Any) -> None:
    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO products (sku, name, price, stock) "
                     "VALUES ('SPARE', 'Spare', 1, 1)")
    report = check_anomalies(shop.url, table="products", key="id", value="stock",
                             anomalies=["lost_update", "write_skew"])
    assert not report.prevented("lost_update", "READ COMMITTED")
    assert report.prevented("lost_update", "REPEATABLE READ")
    assert report.allowed_at("REPEATABLE READ") == ["write_skew"]
    assert_prevented(shop.url, ["lost_update", "write_skew"], "SERIALIZABLE",
                     table="products", key="id", value="stock")
    print(report)
# --8<-- [end:anomalies]

