"""The FastAPI app end to end: register, log in, list posts, on a real PostgreSQL."""

from __future__ import annotations

from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import dbtest
from migrations_example.factories import PostFactory, UserFactory
from migrations_example.models import User


async def test_register_commits_and_login_works(client: AsyncClient,
                                                async_db: AsyncSession) -> None:
    reply = await client.post("/register", json={"email": "Ann@Example.org",
                                                 "password": "correct horse", "username": "ann"})
    assert reply.status_code == 201
    user = await async_db.get(User, reply.json()["id"])
    assert user is not None and user.email == "ann@example.org"
    ok = await client.post("/login", json={"email": "ann@example.org",
                                           "password": "correct horse"})
    assert ok.status_code == 200 and ok.json()["token"]
    bad = await client.post("/login", json={"email": "ann@example.org", "password": "nope"})
    assert bad.status_code == 401


async def test_duplicate_email_is_409_and_keeps_earlier_rows(client: AsyncClient,
                                                             async_db: AsyncSession) -> None:
    body = {"email": "bob@example.org", "password": "12345678", "username": "bob"}
    assert (await client.post("/register", json=body)).status_code == 201
    assert (await client.post("/register", json=body)).status_code == 409
    count = await async_db.scalar(select(func.count()).select_from(User))
    assert count == 1


async def test_starts_with_no_users(async_db: AsyncSession) -> None:
    # the commits of the tests above were rolled back with their outer transaction
    await dbtest.assert_row_count(async_db, "users", 0)


async def test_posts_are_paged_newest_first(client: AsyncClient,
                                            async_db: AsyncSession) -> None:
    from dbtest.factories import acreate, acreate_batch

    author = await acreate(UserFactory, username="writer")
    posts = await acreate_batch(PostFactory, 25, author=author, published=True)
    await acreate(PostFactory, author=author, published=False)  # never listed
    seen: list[int] = []
    for offset in range(0, 30, 10):
        page = (await client.get("/posts", params={"limit": 10, "offset": offset})).json()
        assert page["total"] == 25
        assert all(item["author"] == "writer" for item in page["items"])
        seen += [item["id"] for item in page["items"]]
    assert sorted(seen) == sorted(p.id for p in posts)  # every post once, none twice
    assert seen == sorted(seen, reverse=True)  # same created_at: newest id first
    assert (await client.get("/posts", params={"limit": 0})).status_code == 422


async def test_seeded_user_can_log_in(client: AsyncClient, async_db: AsyncSession) -> None:
    from dbtest.factories import acreate
    from migrations_example.factories import DEFAULT_PASSWORD

    user = await acreate(UserFactory, email="seeded@example.org")
    ok = await client.post("/login", json={"email": user.email, "password": DEFAULT_PASSWORD})
    assert ok.status_code == 200
