"""Anomaly checks: what PostgreSQL prevents at each isolation level (Hermitage)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from dbtest.concurrency import (
    ANOMALIES,
    HERMITAGE_POSTGRES,
    ISOLATION_LEVELS,
    assert_prevented,
    check_anomalies,
)
from dbtest.errors import ConcurrencyError, DbAssertionError

HERMITAGE_TABLE = """\
anomalies on a throwaway table:
anomaly              READ UNCOMMITTED  READ COMMITTED    REPEATABLE READ   SERIALIZABLE
dirty write          prevented         prevented         prevented         prevented
dirty read           prevented         prevented         prevented         prevented
lost update          ALLOWED           ALLOWED           prevented         prevented
non repeatable read  ALLOWED           ALLOWED           prevented         prevented
phantom              ALLOWED           ALLOWED           prevented         prevented
read skew            ALLOWED           ALLOWED           prevented         prevented
write skew           ALLOWED           ALLOWED           ALLOWED           prevented"""


@pytest.fixture
def products(fresh_db: Any) -> Any:
    """fresh_db with three products of the example schema."""
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO products (sku, name, price, stock) VALUES "
                     "('A', 'a', 1.50, 7), ('B', 'b', 2.00, 3), ('C', 'c', 9.99, 0)")
    return fresh_db


def stocks(db: Any) -> list[tuple[str, int, Decimal]]:
    with psycopg.connect(db.dsn) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT sku, stock, price FROM products ORDER BY sku").fetchall()]


def test_throwaway_table_matches_hermitage(fresh_db: Any) -> None:
    report = check_anomalies(fresh_db.url)
    assert report.text == HERMITAGE_TABLE == repr(report)
    assert report.matches_hermitage and report.differences() == []
    for anomaly in ANOMALIES:
        for level in ISOLATION_LEVELS:
            assert report.prevented(anomaly, level) is HERMITAGE_POSTGRES[anomaly][level]
    assert report.allowed_at("REPEATABLE READ") == ["write_skew"]
    assert report.outcome("lost update", "repeatable_read").how == (
        "t2_write_x failed (serialization failure (40001): could not serialize access due "
        "to concurrent update)")
    explained = report.explain("write_skew", "SERIALIZABLE")
    assert explained.startswith("write_skew at SERIALIZABLE: prevented - t2_commit failed")
    assert "permutation: write_skew.t1_read write_skew.t2_read" in explained
    with psycopg.connect(fresh_db.dsn) as conn:  # the throwaway table is gone
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE "
                            "'dbtest_anomalies%'").fetchone() == (0,)


def test_on_the_users_own_table(products: Any) -> None:
    before = stocks(products)
    report = check_anomalies(products.url, table="public.products", key="sku",
                             value="stock", anomalies=["lost_update", "dirty write"],
                             isolation_levels=["read committed", "REPEATABLE READ"])
    assert report.table == "public.products (sku='A', 'B'; column stock)"
    assert not report.prevented("lost_update", "READ COMMITTED")
    assert report.prevented("lost_update", "REPEATABLE READ")
    assert report.prevented("dirty_write", "READ COMMITTED")
    assert report.outcome("dirty_write", "READ COMMITTED").how == (
        "t2's write waited until t1 committed")
    assert stocks(products) == before  # the two rows were restored
    price = check_anomalies(products.url, table="products", value="price", keys=(2, 3),
                            anomalies=["read_skew"], isolation_levels=["SERIALIZABLE"])
    assert price.prevented("read_skew", "SERIALIZABLE")
    assert stocks(products) == before


def test_assert_prevented_pins_the_level(products: Any) -> None:
    assert_prevented(products.url, ["lost_update", "read_skew"], "REPEATABLE READ",
                     table="products", value="stock")
    with pytest.raises(DbAssertionError) as info:
        assert_prevented(products.url, "lost_update", "READ COMMITTED", table="products",
                         value="stock")
    assert str(info.value) == (
        "at READ COMMITTED PostgreSQL allowed 1 anomaly on products (id=1, 2; column stock):\n"
        "  lost_update: both read-modify-writes committed: t1's update was lost. Fix: run at "
        "REPEATABLE READ or stronger, or lock the rows you read (SELECT ... FOR UPDATE).")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"anomalies": ["torn_read"]}, "unknown anomaly 'torn_read'; known: dirty_write"),
    ({"isolation_levels": ["SNAPSHOT"]}, "unknown isolation level 'SNAPSHOT'"),
    ({"table": "nope"}, "table 'nope' does not exist"),
    ({"table": "products", "value": "stok"}, "has no column 'stok' \\(passed as value=\\)"),
    ({"table": "products", "value": "name"}, "column 'name' of 'products' is not numeric"),
    ({"table": "orders", "value": "id"}, "need two rows in 'orders', found 0"),
    ({"table": "products", "value": "stock", "keys": (1, 99)}, "do not name two rows"),
])
def test_bad_input(products: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConcurrencyError, match=message):
        check_anomalies(products.url, **kwargs)
