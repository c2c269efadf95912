"""factory-boy bound to the test session (sync and async), the bulk path, dbtest fakes."""

# factory-boy ships no type information: its names are untyped and not re-exported, and a
# subclass that redeclares a field changes the declaration's type. Silence exactly those.
# mypy: disable-error-code="attr-defined,no-untyped-call,assignment"

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import factory
import pytest
import sqlalchemy as sa
from factory.alchemy import SQLAlchemyModelFactory
from sqlalchemy.orm import Session

from dbtest import factories as dbf
from dbtest.errors import ConfigError
from dbtest.fakes import Fake, FastFaker
from migrations_example import factories as F
from migrations_example.models import Comment, Order, OrderItem, Post, Profile, User, post_tags


def _count(db: Session, what: Any) -> int:
    return db.scalar(sa.select(sa.func.count()).select_from(what)) or 0


@pytest.fixture
def statements(db_connection: sa.Connection) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(db_connection, "before_cursor_execute", record)
    yield seen
    sa.event.remove(db_connection, "before_cursor_execute", record)


def _slow(factory_cls: Any) -> Callable[..., list[Any]]:
    """``create_batch`` as factory-boy does it (one create() per row)."""
    return lambda size, **kw: [factory_cls.create(**kw) for _ in range(size)]


# -- binding ------------------------------------------------------------------------------
def test_factories_are_bound_to_the_test_session(db: Session) -> None:
    user: Any = F.UserFactory()
    assert user.id is not None and db.get(User, user.id) is user
    post = F.PostFactory(tags=[F.TagFactory(), F.TagFactory()])  # SubFactory + post-gen
    assert post.author.id is not None and len(post.tags) == 2


def test_bind_and_unbind_restore_previous_state(db: Session) -> None:
    mine = Session(bind=db.connection())

    class OwnSession(SQLAlchemyModelFactory):
        class Meta:
            model = User
            sqlalchemy_session = mine  # a session of its own: left alone

    other = Session(bind=db.connection())
    unbind = dbf.bind_session(other)
    try:
        assert dbf.current_session() is other
        assert F.UserFactory().id is not None and F.UserFactory() in other

        class Later(F.UserFactory):  # defined while bound: inherits the binding
            pass

        assert Later() in other
        assert OwnSession._meta.sqlalchemy_session is mine
        assert OwnSession._meta.sqlalchemy_session_factory is None
        assert OwnSession(email="own@x.io") in mine
    finally:
        unbind()
        other.close()
    assert dbf.current_session() is db  # the test's binding is back
    assert Later() in db
    mine.close()


def test_binding_writes_nothing_to_factory_boy(db: Session) -> None:
    """Issue 17: no method of factory-boy is replaced, and binding a test (or a seed set)
    changes nothing in a factory's options; only factory-boy writes the session it got
    from the session factory."""
    base = dict(vars(SQLAlchemyModelFactory))
    base_meta = dict(vars(SQLAlchemyModelFactory._meta))
    assert dbf.is_dbtest_bound(F.UserFactory)  # adopted: its Meta names no session
    before = {cls: dict(vars(cls._meta)) for cls in dbf.all_factories()}
    other = Session(bind=db.connection())
    unbind = dbf.bind_session(other, seed=5)
    made = F.PostFactory()
    assert made in other and made.author in other
    unbind()
    other.close()
    assert dict(vars(SQLAlchemyModelFactory)) == base
    assert dict(vars(SQLAlchemyModelFactory._meta)) == base_meta
    for cls, options in before.items():
        after = dict(vars(cls._meta))
        for written_by_factory_boy in ("sqlalchemy_session", "_counter"):
            options.pop(written_by_factory_boy), after.pop(written_by_factory_boy)
        assert after == options, cls


def test_unbound_factory_names_the_fixtures() -> None:
    dbf.bind_session(Session())()  # (a binding that ends at once adopts the factories)
    with pytest.raises(ConfigError, match="requests the db or async_db fixture"):
        F.UserFactory()


def test_model_factory_names_dbtest_session(db: Session) -> None:
    class Writer(dbf.ModelFactory):
        class Meta:
            model = User
            sqlalchemy_session_persistence = "flush"

        email = factory.Sequence(lambda n: f"writer{n}@x.io")
        username = factory.Sequence(lambda n: f"writer{n}")
        password_hash = "x"

    assert Writer._meta.sqlalchemy_session_factory is dbf.current_session
    assert db.get(User, Writer().id) is not None
    assert len({u.id for u in Writer.bulk_create(60)}) == 60
    assert _count(db, User) == 61


def test_seeded_binding_is_deterministic(db: Session) -> None:
    class Person(F.UserFactory):
        username = factory.Faker("user_name")
        email = Fake("email", unique=True)

    made = []
    for _ in range(2):
        dbf.bind_session(db, seed=42)
        made.append([(u.username, u.email) for u in Person.build_batch(3)])
    assert made[0] == made[1]
    dbf.bind_session(db, seed=43)
    assert [(u.username, u.email) for u in Person.build_batch(3)] != made[0]


# -- the bulk path ----------------------------------------------------------------------
def test_create_batch_is_factory_boys_at_every_size(db: Session, statements: list[str]
                                                    ) -> None:
    class Signed(F.PostFactory):  # issue 17: reads a primary key while being built
        title = factory.LazyAttribute(lambda o: f"by user {o.author.id}")

    posts = Signed.create_batch(60)
    assert all(p.title == f"by user {p.author.id}" and p.author.id for p in posts)
    statements.clear()
    users = F.UserFactory.create_batch(60)
    assert sum(s.startswith("INSERT INTO users") for s in statements) == 60  # flush per row
    assert _count(db, User) == 120 and all(u.id for u in users)


def test_bulk_create_is_the_opt_in_bulk_path(db: Session, statements: list[str]) -> None:
    users = dbf.bulk_create(F.UserFactory, 200)
    assert len(statements) < 12, statements  # nextval + COPY (+ savepoint), not 200 INSERTs
    assert all(u.id for u in users) and len({u.id for u in users}) == 200
    assert all(db.get(User, u.id) is u for u in users)  # persistent in the session
    assert users[0].created_at is not None  # server default, loaded on access
    assert _count(db, User) == 200


ROWS: dict[Any, Callable[[Any], tuple[Any, ...]]] = {
    F.UserFactory: lambda u: (u.email, u.username, u.password_hash, u.role_id),
    F.PostFactory: lambda p: (p.title, p.body, p.published, p.author.email),
    F.ProfileFactory: lambda p: (p.bio, p.avatar_url, p.user.email, p.user.profile is p),
    F.CommentFactory: lambda c: (c.body, c.post.title, c.post.author.email, c.author.email),
    F.OrderItemFactory: lambda i: (i.quantity, i.unit_price, i.product.sku,
                                   i.product.price, i.order.user.email),
}


@pytest.mark.parametrize("factory_cls", list(ROWS), ids=lambda f: f.__name__)
def test_bulk_path_makes_the_same_rows_as_the_slow_path(db: Session, factory_cls: Any) -> None:
    made = []
    for create in (_slow(factory_cls), lambda n: dbf.bulk_create(factory_cls, n)):
        nested = db.begin_nested()
        dbf.bind_session(db, seed=7)  # same random state and sequences for both paths
        objs = create(60)
        db.flush()
        made.append([ROWS[factory_cls](o) for o in objs])
        nested.rollback()
    assert made[0] == made[1]
    assert len(set(made[1])) == 60


def test_bulk_subfactories_many_to_many_and_later_flushes(db: Session) -> None:
    tags = F.TagFactory.create_batch(3)
    posts = dbf.bulk_create(F.PostFactory, 55, tags=tags)
    assert _count(db, Post) == 55 and _count(db, post_tags) == 165
    assert len(tags[0].posts) == 55  # loads from the database: the links are there
    assert posts[0].author.posts == [posts[0]]
    items = dbf.bulk_create(F.OrderItemFactory, 50)
    assert items[0].unit_price == items[0].product.price
    assert _count(db, Order) == 50 and _count(db, OrderItem) == 50
    dbf.bulk_create(F.CommentFactory, 50, author=None)
    assert _count(db, Comment) == 50
    db.commit()  # nothing left pending: no duplicate INSERTs
    assert _count(db, post_tags) == 165


def test_bulk_create_of_a_row_by_row_factory_still_copies(db: Session, statements: list[str]
                                                         ) -> None:
    class Random(F.UserFactory):  # two random draws per row: factory-boy builds the rows
        username = factory.Faker("user_name")
        email = factory.Faker("email")

    nested = db.begin_nested()
    dbf.bind_session(db, seed=11)
    expected = [(u.username, u.email) for u in _slow(Random)(60)]
    nested.rollback()
    dbf.bind_session(db, seed=11)
    statements.clear()
    users = dbf.bulk_create(Random, 60)
    assert [(u.username, u.email) for u in users] == expected
    assert not any(s.startswith("INSERT INTO users") for s in statements), statements
    assert all(db.get(User, u.id) is u for u in users) and _count(db, User) == 60


def test_bulk_with_related_factory(db: Session) -> None:
    class UserWithProfile(F.UserFactory):
        profile = factory.RelatedFactory(F.ProfileFactory, factory_related_name="user")

    users = dbf.bulk_create(UserWithProfile, 60)  # RelatedFactory: factory-boy builds rows
    assert _count(db, Profile) == 60
    assert all(u.profile.user_id == u.id for u in users)


def test_columnar_fakes_factory(db: Session) -> None:
    class FastProfile(F.ProfileFactory):
        user = factory.SubFactory(F.UserFactory, email=Fake("email", unique=True))
        bio = Fake("paragraph", nb_sentences=2)
        avatar_url = factory.LazyAttribute(lambda o: f"https://a.example/{o.user.username}.png")

    nested = db.begin_nested()
    dbf.bind_session(db, seed=1)
    one_by_one = [FastProfile.create() for _ in range(3)]  # row by row
    expected = [(p.bio, p.user.email, p.avatar_url) for p in one_by_one]
    nested.rollback()
    dbf.bind_session(db, seed=1)
    profiles = dbf.bulk_create(FastProfile, 500)  # column by column: the same values
    assert [(p.bio, p.user.email, p.avatar_url) for p in profiles[:3]] == expected
    assert _count(db, Profile) == 500
    assert len({p.user.email for p in profiles}) == 500
    assert profiles[9].avatar_url == f"https://a.example/{profiles[9].user.username}.png"


def test_bulk_error_names_the_factory_and_row(db: Session) -> None:
    from dbtest.errors import SeedError

    F.UserFactory(email="taken@example.com")
    with pytest.raises(SeedError, match=r"User batch: bulk_insert into users: row 51 .*"
                                        r"uq_users_email"):
        dbf.bulk_create(F.UserFactory, 51, email=factory.Iterator(
            [f"u{i}@x.io" for i in range(50)] + ["taken@example.com"]))


# -- async ------------------------------------------------------------------------------
async def test_acreate_in_async_tests(async_db: Any) -> None:
    user = await dbf.acreate(F.UserFactory, username="ann")
    assert user.id is not None and user.username == "ann"
    post = await dbf.acreate(F.PostFactory)  # SubFactory inside the greenlet
    assert post.author.id is not None

    class UserWithProfile(dbf.AsyncFactoryMixin, F.UserFactory):
        profile = factory.RelatedFactory(F.ProfileFactory, factory_related_name="user")

    made = await UserWithProfile.acreate()
    count = (await async_db.execute(sa.select(sa.func.count()).select_from(Profile))).scalar()
    assert count == 1 and made.id is not None
    batch = await dbf.acreate_batch(F.UserFactory, 30)
    bulk = await dbf.abulk_create(F.UserFactory, 80)  # asyncpg COPY
    assert len({u.id for u in batch + bulk}) == 110
    total = (await async_db.execute(sa.select(sa.func.count()).select_from(User))).scalar()
    assert total == 113
    with pytest.raises(ConfigError, match=r"factory-boy cannot await.*acreate\(Factory"):
        F.UserFactory()
    with pytest.raises(ConfigError, match=r"factory-boy cannot await"):
        dbf.bulk_create(F.UserFactory, 3)


def test_acreate_needs_an_async_session(db: Session) -> None:
    import asyncio

    with pytest.raises(ConfigError, match="bound to a sync Session"):
        asyncio.run(dbf.acreate(F.UserFactory))

    class Own(SQLAlchemyModelFactory):
        class Meta:
            model = User
            sqlalchemy_session = db

    with pytest.raises(ConfigError, match="Own names its own session"):
        asyncio.run(dbf.acreate(Own))


# -- fast fakes -------------------------------------------------------------------------
def test_fast_faker_is_deterministic_order_free_and_unique() -> None:
    fast = FastFaker(seed=5)
    column = fast.column("email", 20_000, unique=True)
    assert len(set(column)) == 20_000
    assert fast.values("email", [19_999, 3], unique=True) == [column[19_999], column[3]]
    assert FastFaker(seed=5).column("sentence", 5) == fast.column("sentence", 5)
    assert FastFaker(seed=6).column("sentence", 5) != fast.column("sentence", 5)
    assert len(fast.value("text", 1, max_nb_chars=160)) <= 160
    assert all(1 <= v <= 500 for v in fast.column("pydecimal", 100, min_value=1, max_value=500))
    assert isinstance(fast.value("company", 0), str)  # any Faker provider: pooled
    with pytest.raises(ConfigError, match="unknown Faker provider 'nope'"):
        fast.value("nope", 0)


def test_insert_rows_writes_the_same_rows_without_objects(db: Session) -> None:
    class FastUser(F.UserFactory):
        email = Fake("email", unique=True)
        username = Fake("user_name")

    nested = db.begin_nested()
    dbf.bind_session(db, seed=3)
    expected = [(u.email, u.username) for u in FastUser.create_batch(3)]  # one by one
    nested.rollback()
    dbf.bind_session(db, seed=3)
    ids = dbf.insert_rows(FastUser, 300)
    assert len(set(ids)) == 300 and _count(db, User) == 300
    rows = db.execute(sa.select(User.email, User.username).order_by(User.id)).all()
    assert [tuple(r) for r in rows[:3]] == expected
    profile_ids = dbf.insert_rows(F.ProfileFactory, 60)  # SubFactory: via objects
    assert len(profile_ids) == 60 and _count(db, Profile) == 60
