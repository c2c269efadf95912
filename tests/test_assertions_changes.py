"""track_changes: per-table row operations of bulk Core and ORM statements, and what
PostgreSQL's per-transaction counters do with savepoints."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dbtest
from dbtest.assertions import ChangeCounts, Deleted, Inserted, Updated, assertrepr_compare
from dbtest.errors import ConfigError, DbAssertionError
from migrations_example.models import Post, User
from tests._models_assertions import make_blog


def _users(n: int, prefix: str = "u") -> list[dict[str, str]]:
    return [{"email": f"{prefix}{i}@x.io", "username": f"{prefix}{i}", "password_hash": "x"}
            for i in range(n)]


def test_core_bulk_insert_update_delete(db: Session) -> None:
    make_blog(db)  # before the block: not counted
    with dbtest.track_changes(db) as changes:
        db.execute(insert(User), _users(100))
        db.execute(update(User).where(User.username.like("u1%")).values(password_hash="y"))
        db.execute(delete(Post).where(Post.title == "Reply"))
    assert changes.inserted("users") == 100
    assert changes.updated("users") == 11  # u1, u10..u19
    assert changes.deleted(Post) == 1
    assert changes.deleted("comments") == 1  # ON DELETE CASCADE counts too
    assert changes == {"users": Inserted(100) + Updated(11), "posts": Deleted(1),
                       "comments": Deleted(1)}
    assert changes == {"users": (Inserted(100), Updated(11)), "public.posts": Deleted(1),
                       "comments": Deleted(1)}
    assert "dbtest_internal.touched" not in changes  # leak detection writes there per statement


def test_orm_bulk_operations_and_pending_objects(db: Session) -> None:
    db.execute(insert(User), _users(3))
    ids = list(db.scalars(User.__table__.select().with_only_columns(User.id)))
    with dbtest.track_changes(db) as changes:
        db.execute(update(User), [{"id": i, "username": f"renamed{i}"} for i in ids])
        db.add(User(email="late@x.io", username="late", password_hash="x"))  # flushed at exit
    assert changes == {"users": Inserted(1) + Updated(3)}


def test_failure_tabulates_the_difference(db: Session) -> None:
    with dbtest.track_changes(db) as changes:
        db.execute(insert(User), _users(3))
    assert changes != {"users": Inserted(2)}
    with pytest.raises(DbAssertionError) as excinfo:
        changes.assert_equal({"users": Inserted(2), "posts": Deleted(1)})
    message = str(excinfo.value)
    assert "expected | users | *2*      | 0       | 0" in message
    assert "actual   | users | *3*      | 0       | 0" in message
    assert "actual   | posts | 0        | 0       | *0*" in message
    lines = assertrepr_compare("==", changes, {"users": Inserted(2)})
    assert lines is not None and lines[0] == "the changes differ from the expected ones:"
    assert any("*3*" in line for line in lines)
    assert assertrepr_compare("==", 1, 2) is None


def test_savepoints_released_and_rolled_back(db: Session) -> None:
    with dbtest.track_changes(db) as changes:
        with db.begin_nested():
            db.execute(insert(User), _users(2, "kept"))
        db.commit()  # under the db fixture: releases a savepoint, the transaction goes on
        nested = db.begin_nested()
        db.execute(insert(User), _users(5, "gone"))
        nested.rollback()
    dbtest.assert_row_count(db, "users", 2)
    # PostgreSQL counts attempted row operations: the 5 rolled-back inserts are included
    assert changes.inserted("users") == 7
    assert changes.rolled_back_savepoints == 1
    with pytest.raises(DbAssertionError, match=r"1 savepoint\(s\) were rolled back"):
        changes.assert_equal({"users": Inserted(2)})


def test_a_real_commit_inside_the_block_is_refused(db_engine: Engine) -> None:
    conn = db_engine.connect()
    try:
        with pytest.raises(ConfigError, match="transaction ended inside the block"), \
                dbtest.track_changes(conn):
            conn.commit()  # nothing written: the worker database stays clean
    finally:
        conn.close()


def test_bad_uses(db: Session, db_connection: Connection) -> None:
    with dbtest.track_changes(db_connection) as changes, \
            pytest.raises(ConfigError, match="after the `with` block"):
        changes.inserted("users")
    assert changes == {}
    with pytest.raises(ConfigError, match=r"no table 'userz'.*Tables: .*users"):
        changes.inserted("userz")
    with pytest.raises(ConfigError, match=r"must be Inserted\(n\)"):
        assert changes == {"users": 3}
    with pytest.raises(ConfigError, match="needs a Session or Connection"), \
            dbtest.track_changes(object()):
        pass
    with pytest.raises(ConfigError, match="int >= 0"):
        Inserted(-1)
    assert repr(Inserted(2) + Deleted(1)) == "Inserted(2) + Deleted(1)"
    assert isinstance(changes, ChangeCounts) and repr(changes) == "ChangeCounts({})"


async def test_async_session(async_db: AsyncSession) -> None:
    async with dbtest.track_changes(async_db) as changes:
        await async_db.execute(insert(User), _users(4))
    assert changes == {"users": Inserted(4)}
    with pytest.raises(ConfigError, match="async with"), dbtest.track_changes(async_db):
        pass
