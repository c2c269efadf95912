"""Order placement: a correct version and a deliberately naive one.

``place_order`` locks the product rows (``SELECT ... FOR UPDATE``) before it checks and
decrements stock, so two concurrent orders for the last item serialise: the second waits for
the first to commit, then sees the new stock and raises :class:`OutOfStock`.

``place_order_unsafe`` reads stock without a lock and writes back ``read - qty``. Under READ
COMMITTED two concurrent calls both read the same value and the second write overwrites the
first: a lost update, i.e. an oversell. It exists so the concurrency chapter can show it fail.

Both only flush: the caller owns the transaction (commit or roll back).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select

from migrations_example.models import Order, OrderItem, Product

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "OrderError",
    "OutOfStock",
    "UnknownProduct",
    "place_order",
    "place_order_unsafe",
]


class OrderError(Exception):
    """An order that cannot be placed."""


class OutOfStock(OrderError):
    """A product has fewer items in stock than the order asks for."""

    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(f"{sku}: {requested} requested, {available} in stock")
        self.sku = sku
        self.requested = requested
        self.available = available


class UnknownProduct(OrderError, LookupError):
    """An order names a SKU that does not exist."""


def _quantities(items: Iterable[tuple[str, int]]) -> dict[str, int]:
    # The same SKU twice in one order is one line with the summed quantity.
    totals: Counter[str] = Counter()
    for sku, qty in items:
        if qty <= 0:
            raise ValueError(f"{sku}: quantity must be positive, got {qty}")
        totals[sku] += qty
    if not totals:
        raise ValueError("an order needs at least one item")
    return dict(totals)


def _products(session: Session, skus: Iterable[str], *, lock: bool) -> dict[str, Product]:
    # ORDER BY id: concurrent orders lock shared products in the same order, so two orders
    # for the same pair of products wait for each other instead of deadlocking.
    stmt = select(Product).where(Product.sku.in_(sorted(skus))).order_by(Product.id)
    if lock:
        # populate_existing: a Product already in this session's identity map would otherwise
        # keep the stock it had before we waited for the lock.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    found = {p.sku: p for p in session.scalars(stmt)}
    missing = sorted(set(skus) - found.keys())
    if missing:
        raise UnknownProduct(f"unknown SKU(s): {', '.join(missing)}")
    return found


def _check_stock(wanted: dict[str, int], products: dict[str, Product]) -> None:
    # Check every line before changing any, so a failed order modifies nothing.
    for sku, qty in wanted.items():
        if products[sku].stock < qty:
            raise OutOfStock(sku, qty, products[sku].stock)


def _new_order(
    session: Session, user_id: int, wanted: dict[str, int], products: dict[str, Product]
) -> Order:
    order = Order(
        user_id=user_id,
        items=[
            OrderItem(product=products[sku], quantity=qty, unit_price=products[sku].price)
            for sku, qty in wanted.items()
        ],
    )
    session.add(order)
    session.flush()
    return order


def place_order(session: Session, user_id: int, items: list[tuple[str, int]]) -> Order:
    """Create an order for ``user_id`` and take its items out of stock, safely.

    ``items`` are ``(sku, quantity)`` pairs. Raises :class:`OutOfStock` when a product has too
    few items (nothing is changed then), :class:`UnknownProduct` for an unknown SKU.
    """
    wanted = _quantities(items)
    products = _products(session, wanted, lock=True)
    _check_stock(wanted, products)
    for sku, qty in wanted.items():
        # The row is locked until our transaction ends, so read-modify-write is safe here.
        products[sku].stock -= qty
    return _new_order(session, user_id, wanted, products)


def place_order_unsafe(session: Session, user_id: int, items: list[tuple[str, int]]) -> Order:
    """The naive version of :func:`place_order`: it can oversell under concurrency.

    It reads stock without locking and writes back the value computed from that read
    (``UPDATE products SET stock = <read - qty>``). Do not copy it; it is a test subject.
    """
    wanted = _quantities(items)
    products = _products(session, wanted, lock=False)
    _check_stock(wanted, products)
    for sku, qty in wanted.items():
        products[sku].stock = products[sku].stock - qty  # lost update: writes a stale read
    return _new_order(session, user_id, wanted, products)
