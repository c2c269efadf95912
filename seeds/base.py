"""Seed set ``base``: the reference data every environment needs.

Roles, a fixed list of tags and a small product catalogue with stock. Fixed values rather than
Faker: other sets and tests look these rows up by name or SKU.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from migrations_example.models import Product, Role, Tag

if TYPE_CHECKING:
    from dbtest import SeedContext

ROLES = ("admin", "member")

TAGS = ("python", "postgresql", "sqlalchemy", "testing", "fastapi", "performance", "howto", "news")

# (sku, name, price, stock)
PRODUCTS = (
    ("BOOK-001", "Designing Data-Intensive Applications", Decimal("42.50"), 25),
    ("BOOK-002", "The Art of PostgreSQL", Decimal("39.00"), 10),
    ("MUG-001", "Elephant mug", Decimal("12.90"), 100),
    ("MUG-002", "Snake mug", Decimal("12.90"), 80),
    ("SHIRT-S", "Conference T-shirt, S", Decimal("20.00"), 30),
    ("SHIRT-M", "Conference T-shirt, M", Decimal("20.00"), 40),
    ("SHIRT-L", "Conference T-shirt, L", Decimal("20.00"), 35),
    ("STICKER-01", "Sticker pack", Decimal("3.50"), 500),
    ("HOODIE-01", "Hoodie", Decimal("45.00"), 5),
    ("LAST-ONE", "Limited edition print", Decimal("99.99"), 1),
)


def seed(ctx: SeedContext) -> None:
    """Insert roles, tags and products; flush only."""
    ctx.session.add_all([Role(name=name) for name in ROLES])
    ctx.session.add_all([Tag(name=name) for name in TAGS])
    ctx.session.add_all(
        [
            Product(sku=sku, name=name, price=price, stock=stock)
            for sku, name, price, stock in PRODUCTS
        ]
    )
    ctx.session.flush()
