"""Examples of docs/concepts/isolation.md, run by tests/test_docs.py."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dbtest
from migrations_example.models import Role, User


# --8<-- [start:commit]
def test_the_code_under_test_may_commit(db: Session) -> None:
    db.add(Role(name="editor"))
    db.commit()                                   # releases a savepoint, nothing more
    try:
        with db.begin_nested():                   # the app's own savepoints work too
            db.add(Role(name="editor"))           # unique name: fails...
    except IntegrityError:
        pass                                      # ...and only that savepoint is undone
    db.rollback()                                 # rolls back to the last savepoint
    assert db.scalar(select(func.count()).select_from(Role)) == 1


def test_the_next_test_starts_clean(db: Session) -> None:
    assert db.scalar(select(func.count()).select_from(Role)) == 0
# --8<-- [end:commit]


# --8<-- [start:async]
async def test_async_session(async_db: AsyncSession) -> None:
    async_db.add(Role(name="editor"))
    await async_db.commit()
    assert await async_db.scalar(select(func.count()).select_from(Role)) == 1
# --8<-- [end:async]


# --8<-- [start:connection]
def test_session_and_connection_share_the_transaction(db: Session, db_connection: Any) -> None:
    db.add(Role(name="editor"))
    db.flush()
    assert db_connection.scalar(text("SELECT count(*) FROM roles")) == 1
# --8<-- [end:connection]


# --8<-- [start:fresh]
def test_a_job_with_its_own_engine(fresh_db: Any) -> None:
    engine = create_engine(fresh_db.url)          # what an app's global engine would do
    with engine.begin() as conn:                  # a real COMMIT
        conn.execute(text("INSERT INTO roles (name) VALUES ('auditor')"))
    engine.dispose()                              # close what you open: dbtest checks
    with Session(fresh_db.engine) as session:
        assert session.scalar(select(Role.name)) == "auditor"


@pytest.mark.dbtest(isolation="fresh")
def test_db_on_a_database_of_its_own(db: Session) -> None:
    db.add(Role(name="auditor"))
    db.commit()                                   # commits for real
    assert db.scalar(select(func.count()).select_from(Role)) == 1
# --8<-- [end:fresh]


# --8<-- [start:without-pytest]
def test_savepoint_without_fixtures(db_engine: Engine) -> None:
    with dbtest.savepoint(db_engine) as session:
        session.add(User(email="a@x.io", username="a", password_hash="x"))
        session.commit()
        assert session.scalar(select(func.count()).select_from(User)) == 1
    with db_engine.connect() as conn:             # everything was rolled back
        assert conn.scalar(select(func.count()).select_from(User)) == 0
# --8<-- [end:without-pytest]
