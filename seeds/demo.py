"""Seed set ``demo``: a populated blog and shop to click through or benchmark against.

``20 * ctx.scale`` users, each with a profile and 1-3 posts; 0-4 comments per post by random
users; 0-3 tags per post; ``5 * ctx.scale`` orders of 1-3 products. Every user's password is
``password``.

Deterministic: all randomness comes from ``ctx.faker`` (and ``ctx.faker.random``), and the
timestamps count back from a fixed date instead of now(), so the same seed gives the same rows.
Orders do not take items out of stock: they stand for past orders already accounted for, and
this keeps large ``--scale`` runs clear of the ``stock >= 0`` check.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

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
)
from migrations_example.security import hash_password

if TYPE_CHECKING:
    from dbtest import SeedContext

requires = ["base"]

PASSWORD = "password"
_EPOCH = datetime(2024, 6, 1, tzinfo=UTC)
_STATUSES = ("pending", "paid", "shipped", "cancelled")


def _before_epoch(ctx: SeedContext, max_days: int) -> datetime:
    return _EPOCH - timedelta(minutes=ctx.faker.random.randint(0, max_days * 24 * 60))


def seed(ctx: SeedContext) -> None:
    """Insert users with profiles, posts, comments, tags and orders; flush only."""
    session, fake, rnd = ctx.session, ctx.faker, ctx.faker.random
    # ORDER BY: random choices index into these lists, so their order must be stable too.
    member_id = session.scalar(select(Role.id).where(Role.name == "member"))
    tags = list(session.scalars(select(Tag).order_by(Tag.id)))
    products = list(session.scalars(select(Product).order_by(Product.id)))
    # Fixed salt, few iterations: one fast hash shared by all demo users, same on every run.
    password_hash = hash_password(PASSWORD, salt=b"dbtest-demo-seed", iterations=1_000)

    users: list[User] = []
    for i in range(20 * ctx.scale):
        username = f"{fake.user_name()}{i}"  # the index makes it, and the email, unique
        user = User(
            email=f"{username}@example.org",
            username=username,
            password_hash=password_hash,
            role_id=member_id,
            created_at=_before_epoch(ctx, 365),
        )
        user.profile = Profile(
            bio=fake.sentence(nb_words=12),
            avatar_url=f"https://avatars.example.org/{username}.png",
        )
        users.append(user)

    posts: list[Post] = []
    for user in users:
        for _ in range(rnd.randint(1, 3)):
            post = Post(
                author=user,
                title=fake.sentence(nb_words=6).rstrip("."),
                body="\n\n".join(fake.paragraphs(nb=rnd.randint(1, 4))),
                published=rnd.random() < 0.8,
                created_at=_before_epoch(ctx, 180),
                tags=rnd.sample(tags, rnd.randint(0, min(3, len(tags)))),
            )
            posts.append(post)

    for post in posts:
        for _ in range(rnd.randint(0, 4)):
            # Comment(post=...) joins post.comments through the back-reference.
            Comment(
                post=post,
                author=rnd.choice(users),
                body=fake.sentence(nb_words=rnd.randint(4, 20)),
                created_at=post.created_at + timedelta(minutes=rnd.randint(1, 10_000)),
            )

    for _ in range(5 * ctx.scale):
        picked = rnd.sample(products, rnd.randint(1, min(3, len(products))))
        Order(
            user=rnd.choice(users),
            status=rnd.choice(_STATUSES),
            created_at=_before_epoch(ctx, 90),
            items=[
                OrderItem(product=p, quantity=rnd.randint(1, 3), unit_price=p.price) for p in picked
            ],
        )

    # Profiles, posts, comments and orders all hang off the users (save-update cascade); the
    # traversal order is fixed, so the generated ids are the same on every run too.
    session.add_all(users)
    session.flush()
