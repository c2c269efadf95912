"""assert_row_count and assert_rows on the example schema (real PostgreSQL, `db` fixture)."""

from __future__ import annotations

from unittest.mock import ANY

import pytest
from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dbtest
from dbtest.errors import ConfigError, DbAssertionError, DbtestError
from migrations_example.models import User
from tests._models_assertions import make_blog


def _own_frames(excinfo: pytest.ExceptionInfo[BaseException]) -> list[str]:
    """dbtest.assertions frames left in the traceback after pytest hides the hidden ones."""
    shown = excinfo.traceback.filter(excinfo)
    return [str(e.path) for e in shown if "dbtest/assertions" in str(e.path)]


def test_row_count_passes_with_every_kind_of_where(db: Session) -> None:
    make_blog(db)
    dbtest.assert_row_count(db, "users", 3)
    dbtest.assert_row_count(db, User, 3)
    dbtest.assert_row_count(db, "public.users", 3)
    dbtest.assert_row_count(db, "users", 2, where="username <> 'carol'")
    dbtest.assert_row_count(db, "users", 1, where=User.username == "bob")
    dbtest.assert_row_count(db, "users", 1, where=text("email LIKE 'a%'"))
    dbtest.assert_row_count(db, "users", 1, where={"username": "alice"})
    dbtest.assert_row_count(db, "users", 3, where={"role_id": None})


def test_row_count_failure_lists_the_rows_that_are_there(db: Session) -> None:
    make_blog(db)
    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_row_count(db, "users", 1, where="username <> 'carol'")
    message = str(excinfo.value)
    assert "expected 1 row(s) in users where username <> 'carol', found 2:" in message
    assert "alice@example.com" in message and "bob@example.com" in message
    assert "carol@example.com" not in message
    assert isinstance(excinfo.value, AssertionError)
    assert _own_frames(excinfo) == []
    db.execute(insert(User), [{"email": f"u{i}@x.io", "username": f"u{i}", "password_hash": "x"}
                              for i in range(25)])
    with pytest.raises(DbAssertionError, match=r"found 28:(.|\n)*\.\.\. 8 more row\(s\)$"):
        dbtest.assert_row_count(db, "users", 3)


def test_rows_subset_exact_and_ordered(db: Session) -> None:
    make_blog(db)
    dbtest.assert_rows(db, "users", [{"username": "bob"}, {"email": "alice@example.com"}])
    dbtest.assert_rows(db, "users", [{"username": n} for n in ("carol", "alice", "bob")],
                       exact=True)
    dbtest.assert_rows(db, "users", [{"username": "alice"}, {"username": "carol"}],
                       order_matters=True)
    dbtest.assert_rows(db, "users", [{"username": n, "id": ANY} for n in ("alice", "bob")],
                       exact=True, order_matters=True, where="username <> 'carol'")


def test_rows_failure_marks_the_differing_cells(db: Session) -> None:
    make_blog(db)
    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_rows(db, "users", [{"email": "bob@example.com", "username": "robert"},
                                         {"username": "alice"}])
    message = str(excinfo.value)
    assert "1 of 2 expected row(s) not found" in message
    assert "*robert*" in message and "*bob*" in message
    assert "| bob@example.com |" in message  # the agreeing cell is not marked
    assert "(*value* marks the cells that differ)" in message
    assert _own_frames(excinfo) == []


def test_rows_exact_reports_unexpected_rows(db: Session) -> None:
    make_blog(db)
    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_rows(db, "users", [{"username": "alice"}, {"username": "bob"}],
                           exact=True)
    message = str(excinfo.value)
    assert "1 unexpected row(s)" in message
    assert "unexpected id=" in message and "carol" in message


def test_rows_order_matters_fails_on_the_wrong_order(db: Session) -> None:
    make_blog(db)
    dbtest.assert_rows(db, "users", [{"username": "alice"}, {"username": "bob"}],
                       order_matters=True)
    with pytest.raises(DbAssertionError, match="primary-key order"):
        dbtest.assert_rows(db, "users", [{"username": "bob"}, {"username": "alice"}],
                           order_matters=True)


def test_a_loose_expected_row_does_not_steal_the_only_match(db: Session) -> None:
    make_blog(db)
    # {"password_hash": "x"} fits every user; it must not take alice from the strict row
    dbtest.assert_rows(db, "users", [{"password_hash": "x"}, {"username": "alice"},
                                     {"username": "bob"}])
    with pytest.raises(DbAssertionError, match="1 of 4 expected"):
        dbtest.assert_rows(db, "users", [{"password_hash": "x"}] * 4)


def test_bad_inputs_name_the_culprit(db: Session) -> None:
    make_blog(db)
    with pytest.raises(ConfigError, match=r"table 'user' does not exist.*Did you mean 'users'"):
        dbtest.assert_row_count(db, "user", 1)
    with pytest.raises(ConfigError, match=r"no column 'emial'.*Did you mean 'email'"):
        dbtest.assert_rows(db, "users", [{"emial": "a@x.io"}])
    with pytest.raises(ConfigError, match=r"no column 'nmae'"):
        dbtest.assert_row_count(db, "users", 1, where={"nmae": "x"})
    with pytest.raises(ConfigError, match=r"where=.*nmae.*failed: column \"nmae\" does not"):
        dbtest.assert_row_count(db, "users", 1, where="nmae = 'x'")
    # the failed clause ran in a savepoint: the test's transaction is still usable
    dbtest.assert_row_count(db, "users", 3)
    with pytest.raises(ConfigError, match="list of mappings"):
        dbtest.assert_rows(db, "users", {"username": "alice"})  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="needs a Session, Connection or Engine"):
        dbtest.assert_row_count(object(), "users", 1)  # type: ignore[call-overload]
    with pytest.raises(DbtestError, match="must be a count"):
        dbtest.assert_row_count(db, "users", -1)


def test_internal_schema_is_invisible(db: Session) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        dbtest.assert_row_count(db, "dbtest_internal.touched", 0)


def test_connection_and_engine_handles(db: Session, db_connection: Connection,
                                       db_engine: Engine) -> None:
    make_blog(db)
    dbtest.assert_row_count(db_connection, "posts", 2)
    dbtest.assert_rows(db_connection, "posts", [{"title": "Hello"}])
    dbtest.assert_row_count(db_engine, "posts", 0)  # its own connection: nothing committed


async def test_async_session_returns_an_awaitable(async_db: AsyncSession) -> None:
    async_db.add(User(email="a@x.io", username="a", password_hash="x"))
    await async_db.flush()
    await dbtest.assert_row_count(async_db, "users", 1)
    await dbtest.assert_rows(async_db, "users", [{"email": "a@x.io"}], exact=True)
    with pytest.raises(DbAssertionError, match=r"\*b\*"):
        await dbtest.assert_rows(async_db, "users", [{"email": "a@x.io", "username": "b"}])
