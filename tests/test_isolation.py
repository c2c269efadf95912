"""dbtest.savepoint / dbtest.async_savepoint: the same isolation without pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import dbtest
from dbtest.provision.server import PostgresServer


@pytest.fixture(scope="module")
def engine(own_server: PostgresServer) -> Iterator[Engine]:
    own_server.create_database("iso_plain", purpose="test")
    eng = create_engine(own_server.url_for("iso_plain"))
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)"))
    yield eng
    eng.dispose()
    own_server.drop_database("iso_plain")


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM notes")).scalar_one())


def test_commit_inside_savepoint_is_rolled_back(engine: Engine) -> None:
    with dbtest.savepoint(engine) as session:
        session.execute(text("INSERT INTO notes (body) VALUES ('a')"))
        session.commit()  # application code may commit
        session.execute(text("INSERT INTO notes (body) VALUES ('b')"))
        session.rollback()  # ...and roll back to its last commit
        assert session.execute(text("SELECT count(*) FROM notes")).scalar() == 1
        with session.begin_nested():
            session.execute(text("INSERT INTO notes (body) VALUES ('c')"))
        assert session.execute(text("SELECT count(*) FROM notes")).scalar() == 2
        assert count(engine) == 0  # nothing is visible to other connections
    assert count(engine) == 0


def test_exception_still_rolls_back(engine: Engine) -> None:
    with pytest.raises(RuntimeError), dbtest.savepoint(engine) as session:
        session.execute(text("INSERT INTO notes (body) VALUES ('a')"))
        session.commit()
        raise RuntimeError("boom")
    assert count(engine) == 0


def test_integrity_error_then_continue(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    with dbtest.savepoint(engine) as session:
        session.execute(text("INSERT INTO notes (body) VALUES ('ok')"))
        session.commit()
        with pytest.raises(IntegrityError):
            session.execute(text("INSERT INTO notes (body) VALUES (NULL)"))
            session.commit()
        session.rollback()
        assert session.execute(text("SELECT count(*) FROM notes")).scalar() == 1
    assert count(engine) == 0


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_async_savepoint(own_server: PostgresServer, engine: Engine, driver: str) -> None:
    aengine = create_async_engine(own_server.url_for("iso_plain", driver), poolclass=NullPool)
    try:
        async with dbtest.async_savepoint(aengine) as session:
            await session.execute(text("INSERT INTO notes (body) VALUES ('x')"))
            await session.commit()
            async with session.begin_nested():
                await session.execute(text("INSERT INTO notes (body) VALUES ('y')"))
            result = await session.execute(select(func.count()).select_from(text("notes")))
            assert result.scalar() == 2
            assert count(engine) == 0
    finally:
        await aengine.dispose()
    assert count(engine) == 0
