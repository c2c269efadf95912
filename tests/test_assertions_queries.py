"""count_queries, assert_max_queries / assert_num_queries and N+1 detection with
assert_constant_queries, with the SAVEPOINT traffic of dbtest's isolation left out."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, selectinload

import dbtest
from dbtest.errors import ConfigError, DbAssertionError
from migrations_example.models import Post, User


def _posts(db: Session, n: int) -> None:
    """n posts, each by an author of its own."""
    for i in range(n):
        author = User(email=f"author{i}@x.io", username=f"author{i}", password_hash="x")
        db.add(Post(author=author, title=f"post {i}", body="..."))


def test_counts_statements_but_not_savepoints(db: Session, db_engine: Engine) -> None:
    seen: list[str] = []

    def everything(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db_engine, "before_cursor_execute", everything)
    try:
        with dbtest.count_queries(db) as queries:
            db.add(User(email="a@x.io", username="a", password_hash="x"))
            db.commit()  # under the db fixture: RELEASE SAVEPOINT + a new SAVEPOINT
            with db.begin_nested():
                db.scalars(select(User)).all()
            db.rollback()  # ROLLBACK TO SAVEPOINT
            db.scalars(select(User.id)).all()
    finally:
        event.remove(db_engine, "before_cursor_execute", everything)
    savepoints = [s for s in seen if "SAVEPOINT" in s]
    assert len(savepoints) >= 4  # they were sent ...
    assert not [s for s in queries.statements if "SAVEPOINT" in s]  # ... and not counted
    assert queries.count == 3, queries.statements  # INSERT, SELECT users, SELECT users.id
    assert queries.statements[0].startswith("INSERT INTO users")


def test_dbtest_helpers_are_not_counted(db: Session) -> None:
    with dbtest.count_queries(db) as queries:
        dbtest.assert_row_count(db, "users", 0, where="username <> 'x'")
        dbtest.assert_rows(db, "users", [])
    assert queries.count == 0, queries.statements


def test_assert_max_and_num_queries(db: Session) -> None:
    _posts(db, 2)
    db.flush()
    with dbtest.assert_max_queries(db, 1):
        db.scalars(select(Post)).all()
    with dbtest.assert_num_queries(db, 2):
        db.scalars(select(Post)).all()
        db.scalars(select(User)).all()
    with pytest.raises(DbAssertionError) as excinfo, dbtest.assert_max_queries(db, 1):
        db.scalars(select(Post)).all()
        db.scalars(select(User)).all()
    message = str(excinfo.value)
    assert "assert_max_queries: expected at most 1 query, 2 were executed:" in message
    assert "  1. SELECT posts.id" in message and "  2. SELECT users.id" in message
    assert "SAVEPOINT / RELEASE / ROLLBACK TO statements are not counted" in message
    with pytest.raises(DbAssertionError, match="expected exactly 3 queries, 1 was executed"), \
            dbtest.assert_num_queries(db, 3):
        db.scalars(select(Post)).all()


def test_an_error_in_the_block_wins_and_counting_stops(db: Session) -> None:
    with pytest.raises(ZeroDivisionError), dbtest.assert_num_queries(db, 5) as queries:
        db.scalars(select(User)).all()
        1 / 0  # noqa: B018
    db.scalars(select(User)).all()
    assert queries.count == 1


def test_lazy_loading_is_caught_as_n_plus_1(db: Session) -> None:
    def lazy() -> None:
        for post in db.scalars(select(Post)):
            assert post.author.username  # Post.author loads one user per post

    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_constant_queries(db, lazy, setup=lambda n: _posts(db, n), sizes=[1, 5, 10])
    message = str(excinfo.value)
    assert "the number of queries grows with the data (N+1?)" in message
    assert "1    | 2" in message and "10   | 11" in message
    assert "times at 1 rows | at 10 rows | statement" in message
    assert "1               | 10         | SELECT users.id" in message
    assert "FROM users WHERE users.id =" in message
    dbtest.assert_row_count(db, "posts", 0)  # every size was rolled back


def test_eager_loading_is_constant(db: Session) -> None:
    def eager() -> None:
        for post in db.scalars(select(Post).options(selectinload(Post.author))):
            assert post.author.username

    def per_user() -> None:
        for user in db.scalars(select(User).options(selectinload(User.posts))):
            assert len(user.posts) == 1

    counts = dbtest.assert_constant_queries(db, eager, setup=lambda n: _posts(db, n),
                                            sizes=[1, 10])
    assert counts == {1: 2, 10: 2}
    dbtest.assert_constant_queries(db, per_user, setup=lambda n: _posts(db, n), sizes=[1, 10])

    def lazy_collections() -> None:
        for user in db.scalars(select(User)):
            assert len(user.posts) == 1  # User.posts: one query per user

    with pytest.raises(DbAssertionError, match="N\\+1"):
        dbtest.assert_constant_queries(db, lazy_collections, setup=lambda n: _posts(db, n),
                                       sizes=[1, 3])


def test_bad_inputs(db: Session) -> None:
    with pytest.raises(ConfigError, match="at least two different row counts"):
        dbtest.assert_constant_queries(db, lambda: None, setup=lambda n: None, sizes=[3, 3])
    with pytest.raises(ConfigError, match="int >= 0"):
        dbtest.assert_max_queries(db, -1)
    with pytest.raises(ConfigError, match="needs a Session, Connection or Engine"):
        dbtest.count_queries(object())


async def test_async_session(async_db: AsyncSession) -> None:
    async with dbtest.count_queries(async_db) as queries:
        await async_db.execute(select(User))
        await async_db.commit()
    assert queries.count == 1
    with dbtest.assert_num_queries(async_db, 1):
        await async_db.execute(select(User))

    async def setup(n: int) -> None:
        async_db.add_all([User(email=f"u{i}@x.io", username=f"u{i}", password_hash="x")
                          for i in range(n)])

    async def run() -> None:
        (await async_db.scalars(select(User).options(selectinload(User.posts)))).all()

    assert await dbtest.assert_constant_queries(async_db, run, setup=setup,
                                                sizes=[1, 4]) == {1: 2, 4: 2}
