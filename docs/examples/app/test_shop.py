"""The tutorial's tests: the example app with factories, seed sets and snapshots.

They run against migrations_example/ with its own tests/conftest.py (the ``client``
fixture); tests/test_docs.py runs them, with the snapshots stored next to this file.
"""

from __future__ import annotations

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from syrupy.assertion import SnapshotAssertion

import dbtest
from migrations_example.factories import PostFactory, UserFactory
from migrations_example.models import Post, Product
from migrations_example.services import place_order


# --8<-- [start:factories]
def test_factories_write_into_the_test_session(db: Session) -> None:
    ann = UserFactory(username="ann")            # no session in Meta: dbtest bound `db`
    PostFactory.create_batch(3, author=ann)
    dbtest.assert_row_count(db, "posts", 3)
    dbtest.assert_rows(db, "users", [{"username": "ann", "email": "user0@example.com"}])
# --8<-- [end:factories]


# --8<-- [start:api]
async def test_register_then_login(client: AsyncClient, async_db: AsyncSession) -> None:
    body = {"email": "ann@example.org", "password": "correct horse", "username": "ann"}
    assert (await client.post("/register", json=body)).status_code == 201   # the app commits
    await dbtest.assert_row_count(async_db, "users", 1)
    login = await client.post("/login", json={"email": "ann@example.org",
                                              "password": "correct horse"})
    assert login.status_code == 200


async def test_nothing_is_left_behind(async_db: AsyncSession) -> None:
    await dbtest.assert_row_count(async_db, "users", 0)   # the commit above was rolled back
# --8<-- [end:api]


# --8<-- [start:seeds]
@pytest.mark.dbtest(seeds=["base"])
def test_base_catalogue(db: Session) -> None:
    assert db.scalar(select(Product.stock).where(Product.sku == "LAST-ONE")) == 1


@pytest.mark.dbtest(seeds=["demo"])          # demo requires base: both are loaded
async def test_demo_posts_are_listed(client: AsyncClient, async_db: AsyncSession) -> None:
    published = await async_db.scalar(select(func.count()).where(Post.published))
    page = (await client.get("/posts", params={"limit": 5})).json()
    assert page["total"] == published > 0 and len(page["items"]) == 5
# --8<-- [end:seeds]


# --8<-- [start:snapshot]
@pytest.mark.dbtest(seeds=["base"])
def test_order_takes_items_out_of_stock(db: Session, snapshot: SnapshotAssertion) -> None:
    buyer = UserFactory()
    place_order(db, buyer.id, [("MUG-001", 2), ("LAST-ONE", 1)])
    db.commit()
    assert dbtest.table_state(db, "orders", "order_items") == snapshot
    stock = select(Product.sku, Product.stock).where(Product.sku.in_(["MUG-001", "LAST-ONE"]))
    assert dbtest.query_state(db, stock) == snapshot


@pytest.mark.dbtest(seeds=["base"])
async def test_register_changes(client: AsyncClient, async_db: AsyncSession,
                                snapshot: SnapshotAssertion) -> None:
    body = {"email": "bo@example.org", "password": "correct horse", "username": "bo"}
    assert (await client.post("/register", json=body)).status_code == 201
    assert await dbtest.changes(async_db, mask=["users.password_hash"]) == snapshot
# --8<-- [end:snapshot]
