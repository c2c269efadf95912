"""Examples of docs/concepts/seeds.md, run by tests/test_docs.py."""

from __future__ import annotations

from typing import Any

import pytest
from factory.alchemy import SQLAlchemyModelFactory
from faker import Faker
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dbtest
from dbtest.factories import acreate, acreate_batch, bulk_create
from migrations_example.factories import PostFactory, UserFactory
from migrations_example.models import Post, Role, User


# --8<-- [start:marker]
@pytest.mark.dbtest(seeds=["smoke"])          # smoke.sql requires base
def test_smoke_user_has_a_post(db: Session) -> None:
    user = db.scalar(select(User).where(User.username == "smoke"))
    assert user is not None and len(user.posts) == 1
    assert db.scalar(select(func.count()).select_from(Role)) == 2   # from base
# --8<-- [end:marker]


# --8<-- [start:bound]
def test_factories_are_bound_to_db(db: Session) -> None:
    post = PostFactory()                      # its author too, through SubFactory
    assert post.id is not None and post.author.id is not None   # flushed, not committed
    assert db.scalar(select(func.count()).select_from(User)) == 1


async def test_async_factories(async_db: AsyncSession) -> None:
    author = await acreate(UserFactory, username="writer")
    posts = await acreate_batch(PostFactory, 5, author=author)
    assert [p.author_id for p in posts] == [author.id] * 5
# --8<-- [end:bound]


# --8<-- [start:deterministic]
def test_same_values_on_every_run(db: Session, faker: Faker) -> None:
    user = UserFactory()
    assert user.email == "user0@example.com"  # sequences restart in every test
    assert faker.email()                       # seeded from the test id: same on every run
# --8<-- [end:deterministic]


# --8<-- [start:bulk]
def test_large_batches_take_the_bulk_path(db: Session) -> None:
    author = UserFactory()
    posts = bulk_create(PostFactory, 500, author=author)     # one COPY, not 500 flushes
    assert len({p.id for p in posts}) == 500


def test_bulk_insert(db: Session) -> None:
    rows = [{"email": f"u{i}@example.org", "username": f"u{i}", "password_hash": "x"}
            for i in range(10_000)]
    assert dbtest.bulk_insert(db.connection(), User, rows) == 10_000
    dbtest.assert_row_count(db, "users", 10_000)
# --8<-- [end:bulk]


# --8<-- [start:fake]
class FastUserFactory(SQLAlchemyModelFactory):
    class Meta:
        model = User
        sqlalchemy_session_persistence = "flush"

    email = dbtest.Fake("email", unique=True)
    username = dbtest.Fake("user_name", unique=True)
    password_hash = "x"


def test_fast_fake_values(db: Session) -> None:
    users: list[Any] = bulk_create(FastUserFactory, 1_000)  # column by column, one COPY
    assert len({u.email for u in users}) == 1_000
# --8<-- [end:fake]


# --8<-- [start:load]
def test_load_seeds_into_the_test_transaction(db: Session) -> None:
    from pathlib import Path

    report = dbtest.load_seeds(db.connection(), ["demo"], Path("seeds"), seed=7)
    assert report.sets == ["base", "demo"] and report.rows["users"] == 20
    assert db.scalar(select(func.count()).select_from(Post)) > 0
# --8<-- [end:load]
