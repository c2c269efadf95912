"""Examples of docs/concepts/snapshots.md, run by tests/test_docs.py (snapshots stored in
__snapshots__/ next to this file)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session
from syrupy.assertion import SnapshotAssertion

import dbtest
from dbtest.state import DbtestSnapshotExtension
from migrations_example.factories import CommentFactory, PostFactory, UserFactory
from migrations_example.models import Post, User


# --8<-- [start:table-state]
def test_table_state(db: Session, snapshot: SnapshotAssertion) -> None:
    ann = UserFactory(username="ann")
    post = PostFactory(author=ann, title="Hello")
    CommentFactory(post=post, author=UserFactory(username="bob"), body="First!")
    assert dbtest.table_state(db, "users", "posts", "comments",
                              mask=["users.password_hash", "posts.body"]) == snapshot
# --8<-- [end:table-state]


# --8<-- [start:query-state]
def test_query_state(db: Session, snapshot: SnapshotAssertion) -> None:
    ann = UserFactory(username="ann")
    PostFactory.create_batch(2, author=ann, published=True)
    query = (select(User.username, Post.title, Post.author_id)
             .join(Post, Post.author_id == User.id).order_by(Post.id))
    assert dbtest.query_state(db, query, labels={"author_id": "users"}) == snapshot
# --8<-- [end:query-state]


# --8<-- [start:changes]
def test_changes(db: Session, snapshot: SnapshotAssertion) -> None:
    ann = UserFactory(username="ann")
    PostFactory(author=ann, title="Draft", published=False)
    db.execute(text("UPDATE posts SET published = true"))
    assert dbtest.changes(db, "users", "posts",
                          mask=["users.password_hash", "posts.body"]) == snapshot
# --8<-- [end:changes]


# --8<-- [start:txt-file]
def test_one_file_per_snapshot(db: Session, snapshot: SnapshotAssertion) -> None:
    UserFactory(username="ann")
    txt = snapshot.use_extension(DbtestSnapshotExtension)   # __snapshots__/<file>/<test>.txt
    assert dbtest.table_state(db, "users", mask=["users.password_hash"]) == txt
# --8<-- [end:txt-file]


# --8<-- [start:database-snapshots]
def test_save_and_restore(dbtest_server: Any, fresh_db: Any) -> None:
    with fresh_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO roles (name) VALUES ('admin')"))
    fresh_db.engine.dispose()                     # a copy needs no other sessions on it
    dbtest.save_snapshot(dbtest_server, fresh_db.name, "one-role")
    with fresh_db.engine.begin() as conn:
        conn.execute(text("DELETE FROM roles"))
    fresh_db.engine.dispose()
    dbtest.restore_snapshot(dbtest_server, "one-role")          # back into fresh_db.name
    with fresh_db.engine.connect() as conn:
        assert conn.scalar(text("SELECT name FROM roles")) == "admin"
    fresh_db.engine.dispose()
    assert [s.name for s in dbtest.list_snapshots(dbtest_server)] == ["one-role"]
    dbtest.drop_snapshot(dbtest_server, "one-role")
# --8<-- [end:database-snapshots]


# --8<-- [start:migrations]
def test_migrations(dbtest_server: Any) -> None:
    from migrations_example.models import Base

    dbtest.assert_migrations(dbtest_server, "migrations_example/alembic.ini", Base)
# --8<-- [end:migrations]
