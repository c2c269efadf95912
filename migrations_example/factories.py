"""factory-boy factories for the example models.

No ``Meta`` here names a session: dbtest binds every ``SQLAlchemyModelFactory`` without one to
the current test's session (``db`` or ``async_db``). Objects are flushed, never committed, so
they get their ids at once and vanish with the test's transaction.

``UserFactory`` makes a user and nothing else (no role, no profile): the most common factory
should cost one INSERT. Factories of dependent rows make their parents with ``SubFactory``
unless given one (``PostFactory(author=alice)``).
"""

# factory-boy ships no type information (no py.typed): its names are untyped and, under
# mypy --strict, not re-exported from the package. Silence exactly those complaints here.
# mypy: disable-error-code="attr-defined,no-untyped-call,untyped-decorator"

from __future__ import annotations

from typing import Any

import factory
from factory.alchemy import SQLAlchemyModelFactory

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

__all__ = [
    "DEFAULT_PASSWORD",
    "CommentFactory",
    "OrderFactory",
    "OrderItemFactory",
    "PostFactory",
    "ProductFactory",
    "ProfileFactory",
    "RoleFactory",
    "TagFactory",
    "UserFactory",
]

DEFAULT_PASSWORD = "password"
# One hash for every factory user: PBKDF2 at full strength costs ~0.14 s, and a fixed salt
# keeps the column identical between runs (snapshots). The app still verifies it normally.
_DEFAULT_PASSWORD_HASH = hash_password(DEFAULT_PASSWORD, salt=b"dbtest-factories", iterations=1_000)


class _Factory(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_persistence = "flush"


class RoleFactory(_Factory):
    class Meta:
        model = Role

    name = factory.Sequence(lambda n: f"role{n}")


class UserFactory(_Factory):
    class Meta:
        model = User

    # A Sequence, not Faker: the emails must be unique and Faker repeats itself.
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    username = factory.Sequence(lambda n: f"user{n}")
    password_hash = _DEFAULT_PASSWORD_HASH
    role = None


class ProfileFactory(_Factory):
    class Meta:
        model = Profile

    user = factory.SubFactory(UserFactory)
    bio = factory.Faker("sentence")
    avatar_url = factory.Faker("image_url")


class TagFactory(_Factory):
    class Meta:
        model = Tag

    name = factory.Sequence(lambda n: f"tag{n}")


class PostFactory(_Factory):
    class Meta:
        model = Post

    author = factory.SubFactory(UserFactory)
    title = factory.Faker("sentence", nb_words=5)
    body = factory.Faker("paragraph")
    published = True

    @factory.post_generation
    def tags(obj: Post, create: bool, extracted: list[Tag] | None, **kwargs: Any) -> None:
        """``PostFactory(tags=[t1, t2])`` links existing tags.

        The post_tags rows are written by the session's next flush (autoflush before any
        query), not here: flushing a sync Session from inside an AsyncSession would fail.
        """
        if extracted:
            obj.tags.extend(extracted)


class CommentFactory(_Factory):
    class Meta:
        model = Comment

    post = factory.SubFactory(PostFactory)
    author = factory.SubFactory(UserFactory)
    body = factory.Faker("sentence")


class ProductFactory(_Factory):
    class Meta:
        model = Product

    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    name = factory.Faker("word")
    price = factory.Faker("pydecimal", left_digits=3, right_digits=2, min_value=1, max_value=500)
    stock = 100


class OrderFactory(_Factory):
    class Meta:
        model = Order

    user = factory.SubFactory(UserFactory)
    status = "pending"


class OrderItemFactory(_Factory):
    class Meta:
        model = OrderItem

    order = factory.SubFactory(OrderFactory)
    product = factory.SubFactory(ProductFactory)
    quantity = 1
    # The price the product had when ordered, as place_order records it.
    unit_price = factory.SelfAttribute("product.price")
