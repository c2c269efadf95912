"""The integration tests every guide shows, written with dbtest: transaction rollback,
cascade delete, join + aggregate with FILTER/HAVING, bulk insert + bulk update, and
seeded data without cleanup code."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import case, func, insert, select, update
from sqlalchemy.orm import Session

import dbtest
from migrations_example.factories import (
    CommentFactory,
    OrderFactory,
    OrderItemFactory,
    PostFactory,
    ProductFactory,
    ProfileFactory,
    UserFactory,
)
from migrations_example.models import Comment, Order, OrderItem, Post, Product, User


def test_rollback_undoes_a_failed_unit_of_work(db: Session) -> None:
    from sqlalchemy.exc import IntegrityError

    UserFactory(email="taken@example.org")
    db.commit()
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(User(email="taken@example.org", username="dup", password_hash="x"))
    dbtest.assert_row_count(db, "users", 1)


def test_deleting_a_user_cascades(db: Session) -> None:
    author = ProfileFactory().user
    other = UserFactory()
    post = PostFactory(author=author)
    CommentFactory.create_batch(2, post=post, author=other)
    CommentFactory(post=PostFactory(author=other), author=author)  # author set null
    db.flush()
    dbtest.assert_cascade(db, author, expect={"profiles": 1, "posts": 1,
                                              "comments": 2}, set_null={"comments": 1})
    # assert_cascade restored everything: the test's data is untouched
    dbtest.assert_row_count(db, "comments", 3)


def test_join_aggregate_with_filter_and_having(db: Session) -> None:
    alice, bob, carol = UserFactory(username="alice"), UserFactory(username="bob"), \
        UserFactory(username="carol")
    PostFactory.create_batch(3, author=alice, published=True)
    PostFactory(author=alice, published=False)
    PostFactory(author=bob, published=False)
    db.flush()
    published = func.count(Post.id).filter(Post.published.is_(True))
    query = (select(User.username, func.count(Post.id), published)
             .select_from(User).outerjoin(Post, Post.author_id == User.id)
             .group_by(User.username).having(func.count(Post.id) >= 0))
    dbtest.assert_aggregate(db, query)  # recomputed in Python from the joined rows
    dbtest.assert_aggregate(db, query, expected={("alice",): (4, 3), ("bob",): (1, 0),
                                                 ("carol",): (0, 0)})
    assert carol.id is not None


def test_order_totals(db: Session) -> None:
    order = OrderFactory()
    cheap, dear = ProductFactory(price=Decimal("2.50")), ProductFactory(price=Decimal("10.00"))
    OrderItemFactory(order=order, product=cheap, quantity=4, unit_price=cheap.price)
    OrderItemFactory(order=order, product=dear, quantity=1, unit_price=dear.price)
    db.flush()
    total = (select(Order.id, func.sum(OrderItem.quantity * OrderItem.unit_price))
             .join(OrderItem, OrderItem.order_id == Order.id).group_by(Order.id))
    dbtest.assert_aggregate(db, total, expected={(order.id,): Decimal("20.00")})


def test_bulk_insert_then_bulk_update(db: Session) -> None:
    author = UserFactory()
    db.flush()
    rows = [{"author_id": author.id, "title": f"post {i}", "body": "…", "published": False}
            for i in range(100)]
    with dbtest.track_changes(db) as changes:
        db.execute(insert(Post), rows)
        db.execute(update(Post).where(Post.title.like("post 1%")).values(published=True))
    assert changes.inserted("posts") == 100
    assert changes.updated("posts") == 11  # post 1, post 10..19
    dbtest.assert_row_count(db, "posts", 11, where=Post.published.is_(True))


@pytest.fixture
def seed_data(db: Session) -> list[Product]:
    """Data for several tests, with no cleanup: it lives in the test's transaction."""
    products = ProductFactory.create_batch(3, stock=5)
    db.flush()
    return products


def test_seed_data_is_there(db: Session, seed_data: list[Product]) -> None:
    stock = db.scalar(select(func.sum(Product.stock)))
    assert stock == 15


def test_seed_data_is_fresh_each_time(db: Session, seed_data: list[Product]) -> None:
    dbtest.assert_row_count(db, "products", 3)
    in_stock = func.count(case((Product.stock > 0, 1)))
    assert db.scalar(select(in_stock)) == 3


@pytest.mark.dbtest(seeds=["demo"])
def test_demo_seed_set(db: Session) -> None:
    # the demo set is loaded into a template variant: this test costs what an empty one does
    assert db.scalar(select(func.count()).select_from(User)) == 20
    assert db.scalar(select(func.count()).select_from(Comment)) > 0
