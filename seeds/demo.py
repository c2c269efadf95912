"""Seed set ``demo``: a populated blog and shop to click through or benchmark against.

``20 * ctx.scale`` users, each with a profile and 1-3 posts; 0-4 comments per post by random
users; 0-3 tags per post; ``5 * ctx.scale`` orders of 1-3 products. About 235 rows per unit of
scale (``dbtest seed demo --scale 426`` makes ~100k rows). Every user's password is
``password``.

Deterministic: texts come from ``ctx.fast`` (Faker's vocabulary, recombined; ~1 µs a value
instead of Faker's 10-80 µs), choices from ``ctx.faker.random``, and timestamps count back
from a fixed date instead of now(), so the same seed gives the same rows. Rows are written
with ``ctx.bulk_insert`` (COPY) and ids reserved from the tables' sequences up front, which
is what lets ``--scale`` reach 100k rows in a few seconds. Orders do not take items out of
stock: they stand for past orders already accounted for, and this keeps large ``--scale``
runs clear of the ``stock >= 0`` check.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from migrations_example.models import (
    Comment,
    Order,
    OrderItem,
    Post,
    Product,
    Profile,
    Role,
    Tag,
    User,
    post_tags,
)
from migrations_example.security import hash_password

if TYPE_CHECKING:
    from dbtest import SeedContext

requires = ["base"]

PASSWORD = "password"
_EPOCH = datetime(2024, 6, 1, tzinfo=UTC)
_STATUSES = ("pending", "paid", "shipped", "cancelled")
#: rows per unit of scale, roughly (for the progress bar before the exact count is known)
ROWS_PER_SCALE = 235


def seed(ctx: SeedContext) -> None:
    """Insert users with profiles, posts, comments, tags and orders; flush only."""
    session, fast, rnd = ctx.session, ctx.fast, ctx.faker.random
    # ORDER BY: random choices index into these lists, so their order must be stable too.
    member_id = session.scalar(select(Role.id).where(Role.name == "member"))
    tag_ids = list(session.scalars(select(Tag.id).order_by(Tag.id)))
    products = list(session.execute(select(Product.id, Product.price).order_by(Product.id)))
    # Fixed salt, few iterations: one fast hash shared by all demo users, same on every run.
    password_hash = hash_password(PASSWORD, salt=b"dbtest-demo-seed", iterations=1_000)

    def minutes_before_epoch(max_days: int) -> datetime:
        return _EPOCH - timedelta(minutes=rnd.randint(0, max_days * 24 * 60))

    n_users = 20 * ctx.scale
    ctx.progress(0, total=ROWS_PER_SCALE * ctx.scale)
    user_ids = ctx.reserve_ids(User, n_users)
    names = fast.column("user_name", n_users, key="demo.username", unique=True)
    bios = fast.column("sentence", n_users, key="demo.bio", nb_words=12)
    users = [{"id": uid, "email": f"{name}@example.org", "username": name,
              "password_hash": password_hash, "role_id": member_id,
              "created_at": minutes_before_epoch(365)}
             for uid, name in zip(user_ids, names, strict=True)]
    profiles = [{"user_id": uid, "bio": bio,
                 "avatar_url": f"https://avatars.example.org/{name}.png"}
                for uid, name, bio in zip(user_ids, names, bios, strict=True)]

    per_user = [rnd.randint(1, 3) for _ in user_ids]
    n_posts = sum(per_user)
    post_ids = ctx.reserve_ids(Post, n_posts)
    titles = fast.column("sentence", n_posts, key="demo.title", nb_words=6)
    paragraphs = fast.column("paragraph", 4 * n_posts, key="demo.body")
    posts: list[dict[str, Any]] = []
    links: list[dict[str, int]] = []
    authors = [uid for uid, k in zip(user_ids, per_user, strict=True) for _ in range(k)]
    for i, (pid, author) in enumerate(zip(post_ids, authors, strict=True)):
        posts.append({"id": pid, "author_id": author, "title": titles[i].rstrip("."),
                      "body": "\n\n".join(paragraphs[4 * i: 4 * i + rnd.randint(1, 4)]),
                      "published": rnd.random() < 0.8,
                      "created_at": minutes_before_epoch(180)})
        for tag_id in rnd.sample(tag_ids, rnd.randint(0, min(3, len(tag_ids)))):
            links.append({"post_id": pid, "tag_id": tag_id})

    comments: list[dict[str, Any]] = []
    counts = [rnd.randint(0, 4) for _ in posts]
    bodies = fast.column("sentence", sum(counts), key="demo.comment", nb_words=10)
    for post, count in zip(posts, counts, strict=True):
        for _ in range(count):
            comments.append({"post_id": post["id"], "author_id": rnd.choice(user_ids),
                             "body": bodies[len(comments)],
                             "created_at": post["created_at"]
                             + timedelta(minutes=rnd.randint(1, 10_000))})

    n_orders = 5 * ctx.scale
    order_ids = ctx.reserve_ids(Order, n_orders)
    orders, items = [], []
    for oid in order_ids:
        orders.append({"id": oid, "user_id": rnd.choice(user_ids),
                       "status": rnd.choice(_STATUSES), "created_at": minutes_before_epoch(90)})
        for product_id, price in rnd.sample(products, rnd.randint(1, min(3, len(products)))):
            items.append({"order_id": oid, "product_id": product_id,
                          "quantity": rnd.randint(1, 3), "unit_price": price})

    total = sum(map(len, (users, profiles, posts, links, comments, orders, items)))
    ctx.progress(0, total=total)
    for model, rows in ((User, users), (Profile, profiles), (Post, posts), (post_tags, links),
                        (Comment, comments), (Order, orders), (OrderItem, items)):
        ctx.bulk_insert(model, rows)
    ctx.progress(total, total=total)
