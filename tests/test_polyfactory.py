"""polyfactory's SQLAlchemyFactory, bound to the test's session (sync and async) and seeded
per test, as factory-boy's factories are."""

from __future__ import annotations

import json
import textwrap

import pytest
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dbtest.provision._server import PostgresServer

pytest.importorskip("polyfactory", reason="polyfactory is not installed (it comes with the "
                                          "'factories' extra)")

pytest_plugins = ["pytester"]

MODELS = '''
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")
'''

FACTORIES = '''
from polyfactory import Use
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory

from app_models import Author, Book


class AuthorFactory(SQLAlchemyFactory[Author]):
    __set_relationships__ = False
    __set_primary_key__ = False


class BookFactory(SQLAlchemyFactory[Book]):
    __set_primary_key__ = False
    __set_relationships__ = True
    __set_foreign_keys__ = False
    author = Use(AuthorFactory.build)


class OwnSessionFactory(SQLAlchemyFactory[Author]):
    __session__ = "the app's own"  # names its own session: dbtest leaves it alone
    __set_primary_key__ = False
'''

TESTS = '''
import json
import os

from sqlalchemy import func, select

from app_factories import AuthorFactory, BookFactory, OwnSessionFactory
from app_models import Author, Book


def record(name, value):
    with open(os.environ["VALUES_FILE"], "a") as fh:
        fh.write(json.dumps([name, value]) + "\\n")


def test_sync_create(db):
    book = BookFactory.create_sync()
    assert book.id is not None and book.author.id is not None
    assert db.scalar(select(func.count()).select_from(Book)) == 1
    assert OwnSessionFactory.__session__ == "the app's own"
    record("sync", [book.title, book.author.name])


async def test_async_create(async_db):
    authors = await AuthorFactory.create_batch_async(3)
    assert all(a.id for a in authors)
    assert await async_db.scalar(select(func.count()).select_from(Author)) == 3
    record("async", [a.name for a in authors])


def test_rows_rolled_back_and_unbound(db):
    assert db.scalar(select(func.count()).select_from(Author)) == 0
    record("plain", AuthorFactory.build().name)
'''


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
            dbtest_server: PostgresServer) -> pytest.Pytester:
    monkeypatch.setenv("DBTEST_URL", dbtest_server.url)
    monkeypatch.setenv("VALUES_FILE", str(pytester.path / "values.jsonl"))
    pytester.makepyfile(app_models=MODELS, app_factories=FACTORIES, test_poly=TESTS)
    pytester.makefile(".toml", pyproject=textwrap.dedent('''
        [tool.dbtest]
        schema = "metadata:app_models:Base"
        [tool.pytest.ini_options]
        pythonpath = ["."]
        filterwarnings = ["error"]
    '''))
    return pytester


def values(p: pytest.Pytester) -> dict[str, object]:
    path = p.path / "values.jsonl"
    out = dict(json.loads(line) for line in path.read_text().splitlines())
    path.unlink()
    return out


def test_polyfactory_bound_and_seeded_per_test(project: pytest.Pytester) -> None:
    first = project.runpytest_subprocess("-p", "no:cacheprovider")
    first.assert_outcomes(passed=3)
    all_three = values(project)
    # alone, or after other tests, each test makes the same values: seeded from its id
    alone = project.runpytest_subprocess("-p", "no:cacheprovider",
                                         "test_poly.py::test_async_create")
    alone.assert_outcomes(passed=1)
    assert values(project)["async"] == all_three["async"]
    reordered = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "test_poly.py::test_rows_rolled_back_and_unbound",
        "test_poly.py::test_sync_create")
    reordered.assert_outcomes(passed=2)
    again = values(project)
    assert again["sync"] == all_three["sync"] and again["plain"] == all_three["plain"]
    # and a different --dbtest-seed makes different values
    other = project.runpytest_subprocess("-p", "no:cacheprovider", "--dbtest-seed", "7")
    other.assert_outcomes(passed=3)
    assert values(project)["async"] != all_three["async"]


def test_bind_and_unbind_without_a_test() -> None:
    from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory

    from dbtest.factories import bind_session

    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __tablename__ = "things"
        id: Mapped[int] = mapped_column(primary_key=True)

    class ThingFactory(SQLAlchemyFactory[Thing]):
        pass

    from dbtest.errors import ConfigError

    session = Session()
    unbind = bind_session(session, seed=1)
    assert ThingFactory.__session__() is session  # type: ignore[operator,misc]  # dbtest's callable
    unbind()
    with pytest.raises(ConfigError, match="no session is bound"):
        ThingFactory.__session__()  # type: ignore[operator,misc]
