"""``plug_app(app=..., session_dependency=...)``: a FastAPI app whose routes open their
session in a dependency (``Session(engine)`` in ``get_db``, full-stack-fastapi-template's
pattern) gets that dependency overridden with the test's ``db`` for each test.

The app below commits in a route, as a request handler does. In a savepoint test that
commit must land in the test's transaction (the test's ``db`` sees it, the next test does
not, the leak check stays quiet); the app's own overrides come back after each test.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="these tests run a FastAPI app (in the dev extra)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (in the dev extra)")

APP = """
import os

from fastapi import Depends, FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

engine = create_engine(os.environ["APP_URL"])   # built at import, never used as is


def get_db():
    with Session(engine) as session:
        yield session


async def get_db_async():
    yield None


def other():
    return "own"


app = FastAPI()


@app.post("/things/{name}")
def add(name: str, session: Session = Depends(get_db)):
    session.execute(text("INSERT INTO things VALUES (:n)"), {"n": name})
    session.commit()
    return {"count": session.scalar(text("SELECT count(*) FROM things"))}
"""

TESTS = """
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

import fapp

COUNT = text("SELECT count(*) FROM things")


@pytest.fixture(scope="module")
def client():
    with TestClient(fapp.app) as c:
        yield c


def test_1_route_commits_join_the_test_transaction(client, db):
    assert client.post("/things/a").json() == {"count": 1}
    assert db.scalar(COUNT) == 1                       # the test sees the request's row
    assert fapp.app.dependency_overrides[fapp.get_db]() is db


def test_2_nothing_leaked(client, db):
    assert db.scalar(COUNT) == 0
    assert client.post("/things/b").json() == {"count": 1}


@pytest.mark.dbtest(isolation="fresh")
def test_3_fresh_commits_for_real(client, db, fresh_db):
    assert client.post("/things/c").json() == {"count": 1}
    with fresh_db.engine.connect() as conn:            # a connection of its own sees it
        assert conn.scalar(COUNT) == 1


def test_4_own_overrides_are_kept(db):
    assert fapp.app.dependency_overrides[fapp.other]() == "kept"
    assert fapp.app.dependency_overrides[fapp.get_db]() is db
"""

CONFTEST = """
import fapp
from dbtest import plug_app

fapp.app.dependency_overrides[fapp.other] = lambda: "kept"   # the app's own override
dbtest_app = plug_app("fapp:engine", app="fapp:app", session_dependency="fapp:get_db")
"""


def _project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, conftest: str) -> None:
    monkeypatch.setenv("APP_URL", "postgresql+psycopg://app:secret@db.invalid:5432/app")
    monkeypatch.setenv("DBTEST_SCHEMA", "sql:schema.sql")
    pytester.makefile(".sql", schema="CREATE TABLE things (name text);")
    pytester.makepyfile(fapp=APP, test_app=TESTS)
    pytester.makeconftest(conftest)
    pytester.makeini("[pytest]\npythonpath = .\n")


def test_session_dependency_yields_the_test_db(pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _project(pytester, monkeypatch, CONFTEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=4)


def test_without_the_override_the_route_commit_leaks(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # the engine alone follows the test database, but the route's session commits for
    # real: the leak check reports it (the test above passing is not an accident)
    _project(pytester, monkeypatch, CONFTEST.replace(
        'app="fapp:app", session_dependency="fapp:get_db"', ""))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           "test_app.py::test_1_route_commits_join_the_"
                                           "test_transaction")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["*LeakError*things*"])


BAD = """
import fapp
from dbtest import plug_app

dbtest_app = plug_app("fapp:engine", {args})
"""


@pytest.mark.parametrize(("args", "expected"), [
    ("app='fapp:app', session_dependency='fapp:get_dbx'",
     "plug_app(session_dependency=...): 'fapp:get_dbx' does not resolve"),
    ("app='fapp:nope', session_dependency='fapp:get_db'",
     "plug_app(app=...): 'fapp:nope' does not resolve"),
    ("app='fapp:engine', session_dependency='fapp:get_db'",
     "plug_app(app=...): 'fapp:engine' is a sqlalchemy.engine.base.Engine, not a FastAPI app"),
    ("app='starlette.applications:Starlette', session_dependency='fapp:get_db'",
     "is a builtins.type, not a FastAPI app"),
    ("app='fapp:app', session_dependency='os:sep'",
     "plug_app(session_dependency=...): 'os:sep' is a str, not a dependency function"),
    ("app='fapp:app', session_dependency='fapp:get_db_async'",
     "'fapp:get_db_async' is async; the test's db session is sync"),
])
def test_bad_app_or_dependency_names_the_culprit(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 args: str, expected: str) -> None:
    _project(pytester, monkeypatch, BAD.format(args=args))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "test_2")
    result.assert_outcomes(errors=1, deselected=3)
    result.stdout.fnmatch_lines([f"*ConfigError*{expected}*"])


def test_a_starlette_app_is_refused_by_name() -> None:
    from starlette.applications import Starlette

    from dbtest._appengine import AppOverrides
    from dbtest.errors import ConfigError

    with pytest.raises(ConfigError, match=r"is a starlette\.applications\.Starlette, not a "
                       r"FastAPI app.*bind its sessionmaker instead"):
        AppOverrides.resolve(Starlette(), ["os:getcwd"])


def test_app_without_dependency_is_refused_at_once() -> None:
    from dbtest import plug_app
    from dbtest.errors import ConfigError

    with pytest.raises(ConfigError, match="app= and session_dependency= go together"):
        plug_app("x:engine", app="x:app")


def test_undo_puts_back_what_was_there() -> None:
    from fastapi import FastAPI

    from dbtest._appengine import AppOverrides

    def get_db() -> None: ...
    def other() -> None: ...

    app = FastAPI()
    app.dependency_overrides[other] = own = lambda: "own"
    overrides = AppOverrides.resolve(app, [get_db, other])
    previous = overrides.apply("session")
    assert app.dependency_overrides[get_db]() == app.dependency_overrides[other]() == "session"
    overrides.undo(previous)
    assert app.dependency_overrides == {other: own}
