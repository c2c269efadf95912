"""assert_cascade and audit_foreign_keys, on the example schema and on a throwaway schema with
deliberate mistakes (tests/_models_assertions.py)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dbtest
from dbtest.assertions import FkAuditFinding
from dbtest.errors import ConfigError, DbAssertionError
from migrations_example import models
from migrations_example.models import Comment, Post, User
from tests import _models_assertions as throwaway
from tests._models_assertions import make_blog

THROWAWAY = pytest.mark.dbtest(schema="metadata:tests._models_assertions:Base")


def _counts(db: Session) -> dict[str, int]:
    return {t: len(db.execute(select(m)).all()) for t, m in
            (("users", User), ("posts", Post), ("comments", Comment))}


def test_cascade_of_an_orm_object_checked_both_ways_and_undone(db: Session) -> None:
    blog = make_blog(db)
    before = _counts(db)
    report = dbtest.assert_cascade(
        db, blog.alice, expect={"posts": 1, "comments": 2, "orders": 1, "order_items": 1},
        set_null={"comments": 1})
    assert report.orm is not None and report.database is not None
    # alice's own comment on her post is deleted (through posts), not counted as set null
    assert report.database.deleted == {"posts": 1, "comments": 2, "orders": 1,
                                       "order_items": 1}
    assert report.database.set_null == {"comments": 1}
    assert _counts(db) == before
    assert blog.alice.posts[0].title == "Hello"  # the session's objects are intact too


def test_cascade_failure_tabulates_expected_against_both_deletes(db: Session) -> None:
    blog = make_blog(db)
    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_cascade(db, blog.bob, expect={"posts": 1})
    message = str(excinfo.value)
    assert "orm delete of users (id=" in message and "database delete of users" in message
    assert "table    | deleted: expected | orm | database | set null: expected | orm" in message
    assert "comments | 0                 | *1* | *1*" in message  # alice's comment on bob's post
    assert excinfo.traceback.filter(excinfo)[-1].path != excinfo.traceback[-1].path


def test_table_and_primary_key_target(db: Session) -> None:
    blog = make_blog(db)
    report = dbtest.assert_cascade(db, ("users", blog.bob.id),
                                   expect={"posts": 1, "comments": 1}, set_null={"comments": 1})
    assert report.orm is None and report.database is not None
    report = dbtest.assert_cascade(db, (User, blog.carol.id))  # a mapped class: both ways
    assert report.orm is not None and report.database is not None
    dbtest.assert_cascade(db, ("posts", {"title": "Reply"}), expect={"comments": 1})


def test_restrict_blocks_the_delete(db: Session) -> None:
    blog = make_blog(db)
    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_cascade(db, blog.product)
    message = str(excinfo.value)
    assert ("orm delete of products (id=" in message
            and "was refused by constraint fk_order_items_product_id_products (RESTRICT) on "
                "order_items" in message)
    dbtest.assert_cascade(db, blog.product, blocked=True)
    dbtest.assert_cascade(db, ("products", blog.product.id),
                          blocked="fk_order_items_product_id_products")
    with pytest.raises(DbAssertionError, match="not by fk_other"):
        dbtest.assert_cascade(db, blog.product, blocked="fk_other")
    with pytest.raises(DbAssertionError, match="was not refused"):
        dbtest.assert_cascade(db, blog.carol, blocked=True)
    dbtest.assert_row_count(db, "order_items", 1)


def test_bad_targets_and_expectations(db: Session) -> None:
    blog = make_blog(db)
    pending = User(email="p@x.io", username="p", password_hash="x")
    db.add(pending)
    with pytest.raises(ConfigError, match=r"is pending, not persistent: flush the session"):
        dbtest.assert_cascade(db, pending)
    with pytest.raises(ConfigError, match=r"is transient"):
        dbtest.assert_cascade(db, User(email="t@x.io", username="t", password_hash="x"))
    db.flush()
    db.expunge(pending)
    with pytest.raises(ConfigError, match=r"is detached"):
        dbtest.assert_cascade(db, pending)
    with pytest.raises(ConfigError, match=r"table 'post' does not exist.*'posts'"):
        dbtest.assert_cascade(db, blog.bob, expect={"post": 1})
    with pytest.raises(ConfigError, match=r"users \(id=0\) matches 0 rows"):
        dbtest.assert_cascade(db, ("users", 0))
    with pytest.raises(ConfigError, match="via='orm' needs an ORM object"):
        dbtest.assert_cascade(db, ("users", blog.bob.id), via="orm")
    with pytest.raises(ConfigError, match="primary key"):
        dbtest.assert_cascade(db, ("users", (1, 2)))
    with pytest.raises(ConfigError, match="no User with primary key 0"):
        dbtest.assert_cascade(db, (User, 0))


def test_a_cascade_into_an_unreadable_table_is_refused(db_connection: Connection) -> None:
    role = f"dbtest_reader_{uuid.uuid4().hex[:8]}"  # rolled back with the test
    for sql in (f"CREATE ROLE {role} NOLOGIN",
                f"GRANT SELECT, DELETE ON users, posts TO {role}",
                "INSERT INTO users (email, username, password_hash) VALUES ('r@x.io', 'r', 'x')",
                f"SET LOCAL ROLE {role}"):
        db_connection.exec_driver_sql(sql)
    with pytest.raises(ConfigError) as excinfo:
        dbtest.assert_cascade(db_connection, ("users", {"email": "r@x.io"}))
    assert "reaches comments (through fk_comments_post_id_posts" in str(excinfo.value) or \
        "reaches comments (through fk_comments_author_id_users" in str(excinfo.value)
    assert "cannot read" in str(excinfo.value)


async def test_cascade_with_an_async_session(async_db: AsyncSession) -> None:
    user = User(email="a@x.io", username="a", password_hash="x")
    async_db.add_all([user, Post(author=user, title="t", body="b")])
    await async_db.flush()
    report = await dbtest.assert_cascade(async_db, user, expect={"posts": 1})
    assert report.orm is not None and report.orm.deleted == {"posts": 1}


# -- the foreign-key audit -----------------------------------------------------------------
def _summary(findings: list[FkAuditFinding]) -> set[tuple[str, str, str | None]]:
    return {(f.kind, f.table, f.relationship) for f in findings}


EXPECTED_FINDINGS = {
    ("cascade_mismatch", "audit_books", "AuditAuthor.books"),
    ("cascade_mismatch", "audit_reviews", "AuditBook.reviews"),
    ("missing_index", "audit_reviews", None),
    ("set_null_not_nullable", "audit_stickers", None),
}


def test_the_example_models_audit_clean(db: Session) -> None:
    assert dbtest.audit_foreign_keys(models.Base) == []
    assert dbtest.audit_foreign_keys(db, models=models.Base) == []


def test_audit_of_the_throwaway_models_finds_each_mistake() -> None:
    findings = dbtest.audit_foreign_keys(throwaway.Base)
    assert _summary(findings) == EXPECTED_FINDINGS
    books = next(f for f in findings if f.relationship == "AuditAuthor.books")
    assert books.on_delete == "CASCADE" and books.columns == ("author_id",)
    assert "sets audit_books.author_id to NULL" in books.message
    assert "cascade='all, delete-orphan', passive_deletes=True" in books.message
    assert len(findings.of_kind("missing_index")) == 1


@THROWAWAY
def test_audit_of_the_live_database_and_its_failure_message(db: Session) -> None:
    # without models=, every mapped class in the process counts (the example models too:
    # their tables are not in this database, so they add nothing)
    findings = dbtest.audit_foreign_keys(db)
    assert _summary(findings) == EXPECTED_FINDINGS
    assert dbtest.audit_foreign_keys(db, models=throwaway.Base) == findings
    missing = findings.of_kind("missing_index")[0]
    assert missing.constraint == "audit_reviews_book_id_fkey"  # the database's own name
    with pytest.raises(DbAssertionError) as excinfo:
        findings.assert_clean()
    message = str(excinfo.value)
    assert "audit_foreign_keys: 4 finding(s):" in message
    assert "- missing_index: audit_reviews(book_id) -> audit_books ON DELETE SET NULL" in message


@THROWAWAY
def test_orm_and_database_deletes_disagree_on_the_mismatched_relationship(db: Session) -> None:
    author = throwaway.AuditAuthor(name="ann", books=[throwaway.AuditBook(title="a"),
                                                      throwaway.AuditBook(title="b")])
    db.add(author)
    db.flush()
    with pytest.raises(DbAssertionError) as excinfo:
        dbtest.assert_cascade(db, author, expect={"audit_books": 2})
    message = str(excinfo.value)
    assert "orm delete of audit_authors (id=" in message
    assert "database delete" not in message.splitlines()[0]  # the database does cascade
    assert "audit_books | 2                 | *0* | 2        | 0                  | *2* | 0" \
        in message
    dbtest.assert_cascade(db, author, expect={"audit_books": 2}, via="database")
    dbtest.assert_row_count(db, "audit_books", 2, where={"author_id": author.id})


async def test_audit_through_an_async_session(async_db: AsyncSession) -> None:
    assert await dbtest.audit_foreign_keys(async_db, models=models.Base) == []
