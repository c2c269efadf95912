"""Examples of docs/concepts/assertions.md, run by tests/test_docs.py."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, selectinload

import dbtest
from dbtest import Inserted, Updated
from migrations_example.factories import (
    CommentFactory,
    OrderFactory,
    OrderItemFactory,
    PostFactory,
    ProductFactory,
    ProfileFactory,
    UserFactory,
)
from migrations_example.models import Base, Order, OrderItem, Post, User


# --8<-- [start:rows]
def test_rows(db: Session) -> None:
    UserFactory(username="ann", email="ann@example.org")
    UserFactory(username="bob", email="bob@example.org")
    dbtest.assert_row_count(db, "users", 2)
    dbtest.assert_row_count(db, User, 1, where=User.username == "ann")
    dbtest.assert_row_count(db, "users", 1, where="email LIKE 'bob@%'")
    dbtest.assert_rows(db, "users", [{"username": "bob"}])                  # a subset
    dbtest.assert_rows(db, "users", [{"username": "ann"}, {"username": "bob"}],
                       exact=True, order_matters=True)                      # all, by key
# --8<-- [end:rows]


# --8<-- [start:cascade]
def test_deleting_a_user(db: Session) -> None:
    author = ProfileFactory().user
    reader = UserFactory()
    post = PostFactory(author=author)
    CommentFactory.create_batch(2, post=post, author=reader)   # deleted with the post
    CommentFactory(post=PostFactory(author=reader), author=author)   # author set null
    dbtest.assert_cascade(db, author, expect={"profiles": 1, "posts": 1,
                                              "comments": 2}, set_null={"comments": 1})
    dbtest.assert_row_count(db, "comments", 3)      # the delete was undone


def test_products_in_orders_cannot_be_deleted(db: Session) -> None:
    item = OrderItemFactory()
    dbtest.assert_cascade(db, item.product, blocked=True)    # ON DELETE RESTRICT


def test_foreign_keys_agree_with_the_orm() -> None:
    assert dbtest.audit_foreign_keys(Base) == []
# --8<-- [end:cascade]


# --8<-- [start:track]
def test_bulk_update(db: Session) -> None:
    author = UserFactory()
    rows = [{"author_id": author.id, "title": f"post {i}", "body": "...", "published": False}
            for i in range(100)]
    with dbtest.track_changes(db) as changes:
        db.execute(insert(Post), rows)
        db.execute(update(Post).where(Post.title.like("post 1%")).values(published=True))
    assert changes.inserted("posts") == 100 and changes.updated("posts") == 11
    assert changes == {"posts": Inserted(100) + Updated(11)}
# --8<-- [end:track]


# --8<-- [start:aggregate]
def test_order_totals(db: Session) -> None:
    order = OrderFactory()
    cheap = ProductFactory(price=Decimal("2.50"))
    dear = ProductFactory(price=Decimal("10.00"))
    OrderItemFactory(order=order, product=cheap, quantity=4, unit_price=cheap.price)
    OrderItemFactory(order=order, product=dear, quantity=1, unit_price=dear.price)
    totals = (select(Order.id, func.sum(OrderItem.quantity * OrderItem.unit_price),
                     func.count(OrderItem.id).filter(OrderItem.quantity > 1))
              .join(OrderItem, OrderItem.order_id == Order.id).group_by(Order.id))
    dbtest.assert_aggregate(db, totals)                    # recomputed in Python
    dbtest.assert_aggregate(db, totals, expected={(order.id,): (Decimal("20.00"), 1)})
# --8<-- [end:aggregate]


# --8<-- [start:queries]
def list_authors(db: Session) -> list[tuple[str, int]]:
    users = db.scalars(select(User).options(selectinload(User.posts)).order_by(User.id))
    return [(u.username, len(u.posts)) for u in users]


def test_listing_costs_two_queries(db: Session) -> None:
    PostFactory.create_batch(3)
    db.expire_all()
    with dbtest.count_queries(db) as queries:
        list_authors(db)
    assert queries.count == 2, queries.statements
    with dbtest.assert_max_queries(db, 2):
        list_authors(db)


def test_no_n_plus_1(db: Session) -> None:
    counts = dbtest.assert_constant_queries(
        db, lambda: list_authors(db), setup=lambda n: PostFactory.create_batch(n),
        sizes=[1, 10])
    assert counts == {1: 2, 10: 2}
# --8<-- [end:queries]


# --8<-- [start:failure]
@pytest.mark.xfail(raises=AssertionError, strict=True)
def test_a_failing_assertion(db: Session) -> None:
    UserFactory(username="ann")
    UserFactory(username="bob")
    dbtest.assert_rows(db, "users", [{"username": "ann", "email": "ann@example.com"}])
# --8<-- [end:failure]
