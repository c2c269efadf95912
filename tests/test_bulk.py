"""dbtest.bulk_insert: COPY on psycopg and asyncpg, type round trips, defaults, errors."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import dbtest
from dbtest.errors import SeedError

DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE things (
    id serial PRIMARY KEY,
    doc jsonb,
    raw json,
    nums int[],
    labels text[],
    price numeric(10, 2),
    at timestamptz,
    day date,
    feeling mood,
    ref uuid,
    flag boolean,
    note text NOT NULL DEFAULT 'server default',
    email text UNIQUE,
    qty int CHECK (qty > 0),
    parent_id int REFERENCES things (id)
);
"""


class Mood(enum.Enum):
    sad = 1
    ok = 2
    happy = 3


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True)
    email_address: Mapped[str | None] = mapped_column("email")  # key differs from the column
    qty: Mapped[int | None] = mapped_column(default=7)  # a Python-side default
    feeling: Mapped[Mood | None] = mapped_column(sa.Enum(Mood, name="mood", create_type=False))
    note: Mapped[str] = mapped_column(server_default="server default")


REF = uuid.UUID("12345678-1234-5678-1234-567812345678")
AT = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
ROW: dict[str, Any] = {
    "doc": {"a": [1, "x", None], "b": {"c": True}}, "raw": ["list", 2], "nums": [1, 2, 3],
    "labels": ["a,b", 'q"uote', None, "x y"], "price": Decimal("12.34"), "at": AT,
    "day": date(2024, 1, 2), "feeling": "happy", "ref": REF, "flag": True, "email": "a@x.io",
    "qty": 3,
}
EXPECTED = (ROW["doc"], ROW["raw"], [1, 2, 3], ["a,b", 'q"uote', None, "x y"],
            Decimal("12.34"), AT, date(2024, 1, 2), "happy", REF, True, "server default",
            "a@x.io", 3)
SELECT = ("SELECT doc, raw, nums, labels, price, at, day, feeling::text, ref, flag, note, email, "
          "qty FROM things ORDER BY id")


@pytest.fixture
def things(db_connection: sa.Connection) -> sa.Connection:
    from dbtest._sql import run_script

    run_script(db_connection, DDL)
    return db_connection


def _rows(conn: sa.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.exec_driver_sql(SELECT)]


def test_sqlalchemy_connection_round_trips_types(things: sa.Connection) -> None:
    second = {**ROW, "doc": "just a string", "price": 1.5, "at": "2024-01-01T00:00:00+00:00",
              "feeling": Mood.sad, "ref": str(REF), "email": "b@x.io"}
    assert dbtest.bulk_insert(things, "things", [ROW, second]) == 2
    rows = _rows(things)
    assert rows[0] == EXPECTED
    assert rows[1][0] == "just a string"  # any Python value is JSON, as SQLAlchemy's JSON does
    assert rows[1][4] == Decimal("1.50")
    assert rows[1][5] == datetime(2024, 1, 1, tzinfo=UTC)
    assert rows[1][7] == "sad" and rows[1][8] == REF


def test_raw_psycopg_connection(things: sa.Connection) -> None:
    raw = things.connection.dbapi_connection
    assert dbtest.bulk_insert(raw, "public.things", [ROW]) == 1
    assert _rows(things) == [EXPECTED]


def test_model_keys_python_defaults_and_enum_members(things: sa.Connection) -> None:
    rows = [{"email_address": "m@x.io", "feeling": Mood.ok}, {"email_address": "n@x.io"}]
    assert dbtest.bulk_insert(things, Thing, rows) == 2
    got = things.exec_driver_sql(
        "SELECT email, qty, feeling::text, note FROM things ORDER BY id").all()
    assert [tuple(r) for r in got] == [("m@x.io", 7, "ok", "server default"),
                                       ("n@x.io", 7, None, "server default")]


def test_server_default_applies_to_rows_that_lack_the_column(things: sa.Connection) -> None:
    dbtest.bulk_insert(things, "things", [{"email": "a", "note": "mine"}, {"email": "b"}])
    notes = things.exec_driver_sql("SELECT email, note FROM things ORDER BY email").all()
    assert [tuple(r) for r in notes] == [("a", "mine"), ("b", "server default")]


def test_tuples_with_columns_and_session(db: Any, things: sa.Connection) -> None:
    assert dbtest.bulk_insert(db, "things", [("x@y", 2), ("z@y", 4)],
                              columns=["email", "qty"]) == 2
    assert things.exec_driver_sql("SELECT sum(qty) FROM things").scalar() == 6


@pytest.mark.parametrize(("rows", "expect"), [
    ([{"email": "a", "qty": 1}, {"email": "b", "qty": 2}, {"email": "a", "qty": 3}],
     ["row 3", "things_email_key", "already exists"]),
    ([{"email": "a", "qty": 1}, {"email": "b", "qty": -1}], ["row 2", "things_qty_check"]),
    ([{"email": "a", "parent_id": None}, {"email": "b", "parent_id": 999}],
     ["row 2", "things_parent_id_fkey", "(parent_id)=(999)"]),
    ([{"email": "a", "note": None}], ["row 1", "note", "null value"]),
    ([{"email": "a", "qty": "many"}], ["row 1", "qty", "invalid input"]),
])
def test_failing_row_is_named_and_nothing_is_left(things: sa.Connection,
                                                  rows: list[dict[str, Any]],
                                                  expect: list[str]) -> None:
    with pytest.raises(SeedError) as info:
        dbtest.bulk_insert(things, "things", rows)
    message = str(info.value)
    assert "things" in message
    for part in expect:
        assert part in message
    # a savepoint: the caller's transaction goes on, and the COPY left nothing
    assert things.exec_driver_sql("SELECT count(*) FROM things").scalar() == 0


def test_unknown_column_and_missing_table(things: sa.Connection) -> None:
    with pytest.raises(SeedError, match=r"unknown column\(s\) 'colour'.*the table has id, doc"):
        dbtest.bulk_insert(things, "things", [{"email": "a", "colour": "red"}])
    with pytest.raises(SeedError, match=r"'nope' does not exist.*Apply the schema"):
        dbtest.bulk_insert(things, "nope", [{"a": 1}])
    with pytest.raises(SeedError, match="row 1 is a int"):
        dbtest.bulk_insert(things, "things", [1])


async def test_asyncpg_sqlalchemy_and_raw(async_db_connection: Any) -> None:
    conn = async_db_connection
    await conn.run_sync(lambda sync: _ddl(sync))
    second = {**ROW, "price": 2.25, "at": "2024-01-01T00:00:00+00:00", "feeling": Mood.sad,
              "ref": str(REF), "email": "b@x.io", "day": "2024-01-02"}
    assert await dbtest.bulk_insert(conn, "things", [ROW, second]) == 2
    raw: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg: untyped
    assert type(raw).__module__.startswith("asyncpg")
    assert await dbtest.bulk_insert(raw, "things", [{**ROW, "email": "c@x.io"}]) == 1
    rows = [tuple(r) for r in (await conn.exec_driver_sql(SELECT)).all()]
    assert rows[0] == EXPECTED and rows[2][11] == "c@x.io"
    assert rows[1][4] == Decimal("2.25") and rows[1][7] == "sad"
    with pytest.raises(SeedError, match=r"row 2.*things_qty_check"):
        await dbtest.bulk_insert(conn, "things", [{"email": "q", "qty": 1},
                                                  {"email": "r", "qty": 0}])
    with pytest.warns(DeprecationWarning, match="await dbtest.bulk_insert"), \
            pytest.raises(SeedError, match=r"row 2.*things_email_key"):
        await dbtest.abulk_insert(raw, "things", [{"email": "q"}, {"email": "a@x.io"}])
    count = (await conn.exec_driver_sql("SELECT count(*) FROM things")).scalar()
    assert count == 3


def _ddl(sync: sa.Connection) -> None:
    for statement in DDL.split(";"):  # asyncpg prepares statements: one at a time
        if statement.strip():
            sync.exec_driver_sql(statement)


async def test_psycopg_async(fresh_db: Any) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(fresh_db.dsn) as conn:
        await conn.execute(DDL)
        assert await dbtest.bulk_insert(conn, "things", [ROW]) == 1
        with pytest.raises(SeedError, match=r"row 1.*things_email_key"):
            await dbtest.bulk_insert(conn, "things", [ROW])
        cur = await conn.execute(SELECT)
        assert [tuple(r) for r in await cur.fetchall()] == [EXPECTED]
        await conn.rollback()
