"""assert_aggregate: SQL aggregates recomputed in Python from the underlying rows."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Integer, cast, distinct, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dbtest
from dbtest.errors import ConfigError, DbAssertionError
from migrations_example.models import Comment, Order, OrderItem, Post, Product, User
from tests._models_assertions import make_blog

POSTS_PER_USER = (select(User.username, func.count(Post.id))
                  .outerjoin(Post, Post.author_id == User.id).group_by(User.username))


def _shop(db: Session) -> None:
    """alice: a paid order (2 pens) and a pending one (1 pen, 3 mugs); bob: nothing."""
    blog = make_blog(db)
    mug = Product(sku="SKU-2", name="mug", price=Decimal("7.25"), stock=3)
    pending = Order(user=blog.alice, status="pending")
    db.add_all([mug, pending,
                OrderItem(order=pending, product=blog.product, quantity=1,
                          unit_price=Decimal("2.40")),
                OrderItem(order=pending, product=mug, quantity=3, unit_price=Decimal("7.25")),
                Comment(post=blog.bob_post, author=None, body="anonymous")])
    db.flush()


def test_outer_join_zero_counts(db: Session) -> None:
    make_blog(db)
    report = dbtest.assert_aggregate(db, POSTS_PER_USER)
    assert report.sql == report.other == {("alice",): (1,), ("bob",): (1,), ("carol",): (0,)}
    assert report.underlying_rows == 3
    dbtest.assert_aggregate(db, POSTS_PER_USER, expected={("alice",): 1, "bob": 1, ("carol",): 0})
    joined = (select(User.username, func.count(Post.id)).join(User.posts)
              .group_by(User.username))  # an ORM relationship join
    assert dbtest.assert_aggregate(db, joined).other == {("alice",): (1,), ("bob",): (1,)}


def test_filter_nulls_distinct_min_max(db: Session) -> None:
    _shop(db)
    query = (select(Post.title, func.count(Comment.id), func.count(Comment.author_id),
                    func.count().filter(Comment.author_id.is_(None)).label("anonymous"),
                    func.count(distinct(Comment.author_id)), func.min(Comment.body),
                    func.max(Comment.created_at), func.sum(Comment.author_id))
             .outerjoin(Comment).group_by(Post.title))
    report = dbtest.assert_aggregate(db, query)
    assert report.other[("Reply",)][:5] == (2, 1, 1, 1, "agreed")
    assert report.value_columns[2] == "anonymous"


def test_having_sum_avg_and_expressions_around_aggregates(db: Session) -> None:
    _shop(db)
    revenue = func.sum(OrderItem.quantity * OrderItem.unit_price)
    query = (select(Order.status, revenue, func.avg(OrderItem.quantity),
                    func.round(func.avg(OrderItem.unit_price), 1),
                    func.coalesce(func.max(OrderItem.quantity), 0) + 1,
                    cast(func.sum(OrderItem.quantity) / 2, Integer))
             .join(OrderItem).group_by(Order.status).having(revenue > 10))
    report = dbtest.assert_aggregate(db, query)
    assert report.other == {("pending",): (Decimal("24.15"), Decimal(2), Decimal("4.8"), 4, 2)}
    whole = select(func.count(), func.sum(Product.stock), func.avg(Product.price))
    dbtest.assert_aggregate(db, whole)
    nothing = whole.where(Product.stock < 0)  # no rows: count 0, the others NULL
    assert dbtest.assert_aggregate(db, nothing).other == {(): (0, None, None)}
    dbtest.assert_aggregate(db, nothing, expected={(): (0, None, None)})


def test_a_non_deterministic_aggregate_is_caught(db: Session) -> None:
    make_blog(db)
    query = select(User.username, func.sum(func.random() * 1000)).group_by(User.username)
    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_aggregate(db, query)
    message = str(excinfo.value)
    assert ("3 of 3 group(s) differ between the SQL result and the same aggregates "
            "recomputed in Python from 3 underlying row(s)") in message
    assert "username | sum (sql)" in message and "| *" in message
    assert "underlying rows of those groups:" in message
    assert "query: SELECT users.username, sum(random() * 1000) AS sum_1 FROM users" in message


def test_expected_form_failure_marks_the_groups(db: Session) -> None:
    make_blog(db)
    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_aggregate(db, POSTS_PER_USER, expected={("alice",): 2, ("bob",): 1,
                                                              ("dave",): 0})
    message = str(excinfo.value)
    assert "3 of 4 group(s) differ between the SQL result and the expected values" in message
    assert "alice    | *1*         | *2*" in message
    assert "dave     | *-*         | *0*" in message
    assert "carol    | *0*         | *-*" in message


def test_aggregates_python_does_not_recompute(db: Session) -> None:
    make_blog(db)
    names = select(func.string_agg(User.username, literal(",")))
    with pytest.raises(ConfigError, match=r"cannot recompute the aggregate string_agg\(\)"):
        dbtest.assert_aggregate(db, names)
    dbtest.assert_aggregate(db, names.where(User.username == "bob"), expected={(): "bob"})
    with pytest.raises(ConfigError, match="LIMIT"):
        dbtest.assert_aggregate(db, POSTS_PER_USER.limit(1))


def test_bad_queries_are_refused(db: Session) -> None:
    with pytest.raises(ConfigError, match="computes no aggregate"):
        dbtest.assert_aggregate(db, select(User.username).group_by(User.username))
    with pytest.raises(ConfigError, match=r"must be a SQLAlchemy select\(\)"):
        dbtest.assert_aggregate(db, text("SELECT count(*) FROM users"))  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="not whole entities"):
        dbtest.assert_aggregate(db, select(User, func.count(Post.id)).join(Post)
                                .group_by(User.id))
    with pytest.raises(ConfigError, match="tuple of 2 values"):
        dbtest.assert_aggregate(db, select(func.count(), func.max(User.id)),
                                expected={(): 1})


async def test_async_session(async_db: AsyncSession) -> None:
    async_db.add(User(email="a@x.io", username="a", password_hash="x"))
    await async_db.flush()
    report = await dbtest.assert_aggregate(async_db, POSTS_PER_USER)
    assert report.other == {("a",): (0,)}
