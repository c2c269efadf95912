"""Data snapshots: table_state / query_state / schema_state / changes, their text, labels,
masks, diffs and the syrupy flow, on the example schema in a real PostgreSQL."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import literal_column, select, text
from sqlalchemy.orm import Session

import dbtest
from dbtest.errors import SnapshotError
from dbtest.settings import default_cache_dir
from dbtest.state import (
    Changes,
    TableState,
    assertrepr_compare,
    changes,
    query_state,
    schema_state,
    table_state,
)
from migrations_example.models import Post, Product, Role, Tag, User

pytest_plugins = ["pytester"]


def _blog(db: Session) -> None:
    admin = Role(name="admin")
    alice = User(email="alice@x.io", username="alice", password_hash="h1", role=admin)
    bob = User(email="bob@x.io", username="bob", password_hash="h2")
    post = Post(author=bob, title="Hello", body="first | line\nsecond")
    post.tags.append(Tag(name="news"))
    db.add_all([alice, bob, post])
    db.flush()


def test_table_state_text_order_labels_and_masks(db: Session) -> None:
    _blog(db)
    state = table_state(db, "roles", User, "posts", "post_tags")
    assert isinstance(state, TableState)
    assert state == '''
        roles: 1 row, key: id
          id | name
          roles#1 | "admin"
        users: 2 rows, key: id
          id | email | password_hash | role_id | created_at | username
          users#1 | "alice@x.io" | "h1" | roles#1 | <masked> | "alice"
          users#2 | "bob@x.io" | "h2" | NULL | <masked> | "bob"
        posts: 1 row, key: id
          id | author_id | title | body | published | created_at
          posts#1 | users#2 | "Hello" | "first | line\\nsecond" | false | <masked>
        post_tags: 1 row, key: post_id, tag_id
          post_id | tag_id
          posts#1 | tags#1
    '''
    assert dbtest.table_state is table_state  # the public name


def test_numeric_keys_sort_as_numbers(db: Session) -> None:
    # 12 roles: ordered as text, id 10 would come second and be labelled roles#2
    db.add_all(Role(name=f"r{i:02d}") for i in range(1, 13))
    db.flush()
    lines = table_state(db, "roles").text.splitlines()[2:]
    assert [line.split(" | ")[1] for line in lines] == [f'"r{i:02d}"' for i in range(1, 13)]
    assert lines[9].strip().startswith("roles#10 |")


def test_labels_stay_when_ids_shift(db: Session) -> None:
    _blog(db)
    first = table_state(db, "users", "posts")
    raw_first = table_state(db, "users", "posts", labels=False)
    db.execute(text("DELETE FROM post_tags; DELETE FROM posts; DELETE FROM users; "
                    "DELETE FROM tags; DELETE FROM roles"))
    for seq in ("users_id_seq", "posts_id_seq", "roles_id_seq", "tags_id_seq"):
        db.execute(text("SELECT setval(CAST(:s AS regclass), 1000)"), {"s": seq})
    db.expunge_all()
    _blog(db)
    assert table_state(db, "users", "posts") == first
    again = table_state(db, "users", "posts", labels=False)
    assert again != raw_first  # the ids really moved
    assert "| 1001 |" in again.text or "1001 | " in again.text


def test_mask_options(db: Session) -> None:
    db.execute(text("INSERT INTO users (email, username, password_hash, created_at) VALUES "
                    "('a@x.io', 'a', 'secret', '2024-05-01 12:30:00.25+02')"))
    masked = table_state(db, "users", mask=["users.password_hash"])
    assert '"secret"' not in masked.text
    assert masked.text.splitlines()[2] == '  users#1 | "a@x.io" | <masked> | NULL | <masked> | "a"'
    shown = table_state(db, "users", mask={"created_at": False})
    assert "2024-05-01T10:30:00.25Z" in shown.text  # UTC, trailing zeros trimmed
    with pytest.raises(SnapshotError, match="names no column"):
        table_state(db, "users", mask=["users.pasword_hash"])


def test_type_faithful_values(db: Session) -> None:
    db.execute(text("SET LOCAL TimeZone = 'Asia/Tokyo'"))
    db.execute(text('''
        CREATE TABLE typed (
            id int PRIMARY KEY, amount numeric(10, 2), at timestamptz, local_at timestamp,
            day date, doc jsonb, raw json, nums int[], words text[], blob bytea, flag bool,
            u uuid, note text, ratio float8, span interval, tricky text)
    '''))
    db.execute(text('''
        INSERT INTO typed VALUES
          (1, 12.5, '2024-01-02 09:00:00+09', '2024-01-02 09:00:00', '2024-01-02',
           '{"b": 1, "a": [true, null]}', '{"z": 1, "y": 2}', '{1,NULL,3}', '{"a b",c}',
           '\\x00ff', true, '2f1e7a3c-0000-4000-8000-000000000001', '', 0.1, '1 day 02:00',
           ' "quoted" '),
          (2, NULL, 'infinity', NULL, NULL, NULL, NULL, '{}', NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, 'NULL')
    '''))
    lines = table_state(db, "typed").text.splitlines()
    assert lines[2] == (
        '  1 | 12.50 | 2024-01-02T00:00:00Z | 2024-01-02T09:00:00 | 2024-01-02 | '
        '{"a": [true, null], "b": 1} | {"y": 2, "z": 1} | {1,NULL,3} | {"a b",c} | \\x00ff | '
        'true | 2f1e7a3c-0000-4000-8000-000000000001 | "" | 0.1 | 1 day 02:00:00 | '
        '" \\"quoted\\" "')
    assert lines[3] == ('  2 | NULL | infinity | NULL | NULL | NULL | NULL | {} | NULL | NULL | '
                        'NULL | NULL | NULL | NULL | NULL | "NULL"')


def test_order_by_and_tables_without_primary_key(db: Session) -> None:
    db.execute(text("CREATE TABLE log (msg text, n int); "
                    "INSERT INTO log VALUES ('b', 2), ('a', 1), ('c', 1)"))
    with pytest.raises(SnapshotError, match=r"no primary key.*order_by=\{'log'"):
        table_state(db, "log")
    by_n = table_state(db, "log", order_by="n")
    assert by_n.text.splitlines()[0] == "log: 3 rows, order: n"
    assert [ln.split(" | ")[0].strip() for ln in by_n.text.splitlines()[2:]] == \
        ['"a"', '"c"', '"b"']  # ties broken by the other columns, never heap order
    assert table_state(db, "log", order_by={"log": ["msg"]}).text.splitlines()[2] == '  "a" | 1'
    with pytest.raises(SnapshotError, match="has no column 'nope'"):
        table_state(db, "log", order_by="nope")


def test_unknown_table_names_the_known_ones(db: Session) -> None:
    with pytest.raises(SnapshotError, match=r"table 'userz' does not exist.*users"):
        table_state(db, "userz")


def test_query_state(db: Session) -> None:
    _blog(db)
    ordered = query_state(db, select(User.email, User.role_id).order_by(User.email.desc()),
                          labels={"role_id": "roles"})
    assert ordered == '''
        query: 2 rows, in query order
          email | role_id
          "bob@x.io" | NULL
          "alice@x.io" | roles#1
    '''
    unordered = query_state(db, "SELECT username, created_at FROM users WHERE id > :n",
                            {"n": 0}, name="names", mask=["created_at"])
    assert unordered.text.splitlines() == [
        "names: 2 rows, sorted", "  username | created_at",
        '  "alice" | <masked>', '  "bob" | <masked>']
    with pytest.raises(SnapshotError, match="does not return"):
        query_state(db, "SELECT 1 AS one", mask=["two"])


def test_schema_state_leaves_out_dbtest_objects(db_connection: object) -> None:
    before = schema_state(db_connection)  # type: ignore[call-overload]
    assert "table users\n  column id integer not null default nextval(" in before.text
    assert "constraint fk_posts_author_id_users FOREIGN KEY (author_id) REFERENCES " \
           "users(id) ON DELETE CASCADE" in before.text
    assert "dbtest_internal" not in before.text and "dbtest_leak_check" not in before.text
    db_connection.exec_driver_sql("ALTER TABLE users ADD COLUMN nickname text")  # type: ignore[attr-defined]
    after = schema_state(db_connection)  # type: ignore[call-overload]
    explained = assertrepr_compare("==", after, before)
    assert explained is not None
    assert "  + column nickname text" in explained


@pytest.mark.dbtest(seeds=["base"])
def test_changes_inside_savepoint_isolation(db: Session) -> None:
    assert changes(db) == "no changes"
    tags = db.scalars(select(Tag).order_by(Tag.id)).all()
    product = db.scalars(select(Product).order_by(Product.id)).first()
    assert product is not None and tags
    db.add(User(email="new@x.io", username="new", password_hash="h"))
    product.stock += 1
    db.delete(tags[-1])
    db.commit()  # a savepoint commit: still invisible to the start state
    found = changes(db)
    assert isinstance(found, Changes)
    assert (found.inserted("users"), found.updated("products"), found.deleted("tags")) == \
        (1, 1, 1)
    assert found == f'''
        products: 0 inserted, 1 updated, 0 deleted, key: id
          id | sku | name | price | stock
          ~ products#1 | stock: {product.stock - 1} -> {product.stock}
        tags: 0 inserted, 0 updated, 1 deleted, key: id
          id | name
          - tags#{len(tags)} | "{tags[-1].name}"
        users: 1 inserted, 0 updated, 0 deleted, key: id
          id | email | password_hash | role_id | created_at | username
          + users#1 | "new@x.io" | "h" | NULL | <masked> | "new"
    '''


def test_changes_since_for_tests_that_commit(fresh_db: object) -> None:
    engine = fresh_db.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        start = table_state(conn, "users", "roles")
        conn.execute(text("INSERT INTO roles (name) VALUES ('admin')"))
        conn.execute(text("INSERT INTO users (email, username, password_hash, role_id) "
                          "SELECT 'a@x.io', 'a', 'h', id FROM roles"))
        conn.commit()
        assert changes(conn) == "no changes"  # committed: the start state moved with it
        found = changes(conn, "users", since=start)
    assert found.text.splitlines()[-1] == \
        '  + users#1 | "a@x.io" | "h" | roles#1 | <masked> | "a"'
    with pytest.raises(SnapshotError, match="does not hold table"):
        changes(engine, "posts", since=start)


async def test_async_session_is_awaited(async_db: object) -> None:
    session = async_db
    session.add(Role(name="member"))  # type: ignore[attr-defined]
    state = await table_state(session, "roles")  # type: ignore[call-overload]
    assert state.text.splitlines()[2] == '  roles#1 | "member"'
    assert (await changes(session)).inserted("roles") == 1  # type: ignore[call-overload]
    assert "table roles" in (await schema_state(session)).text  # type: ignore[call-overload]
    sync_text = '  roles#1 | "member" | 1.50 | 2024-01-01T00:00:00Z'
    with pytest.raises(SnapshotError, match="has no name"):
        await query_state(session, select(Role.id, text("1")))  # type: ignore[call-overload]
    query: Any = select(Role.id, Role.name, literal_column("1.50::numeric").label("n"),
                   literal_column("'2024-01-01 09:00+09'::timestamptz").label("t"))
    found = await query_state(session, query, labels={"id": "roles"})  # type: ignore[call-overload]
    assert found.text.splitlines()[2] == sync_text  # asyncpg gives the text psycopg gives


def test_row_level_diff(db: Session) -> None:
    _blog(db)
    expected = table_state(db, "users", "roles")
    db.execute(text("UPDATE users SET email = 'bobby@x.io' WHERE username = 'bob'"))
    db.add(User(email="carol@x.io", username="carol", password_hash="h3"))
    db.execute(text("DELETE FROM roles"))
    lines = assertrepr_compare("==", table_state(db, "users", "roles"), expected)
    assert lines is not None
    assert lines[0].startswith("table_state differs from the expected")
    assert '  ~ users#1: role_id: roles#1 -> NULL' in lines
    assert '  ~ users#2: email: "bob@x.io" -> "bobby@x.io"' in lines
    assert '  + users#3 | "carol@x.io" | "h3" | NULL | <masked> | "carol"' in lines
    assert '  - roles#1 | "admin"' in lines
    assert assertrepr_compare("==", 1, 2) is None


def test_equality_with_other_values(db: Session) -> None:
    state = table_state(db, "roles")
    assert state == table_state(db, "roles")
    assert state == "roles: 0 rows, key: id\n  id | name"
    assert state != 42 and repr(state) == str(state) == state.text
    assert Decimal("1") != state


CACHE_DIR = default_cache_dir()

PROJECT_SCHEMA = """
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL,
                      joined timestamptz NOT NULL DEFAULT now());
CREATE TABLE books (id serial PRIMARY KEY, author_id int NOT NULL REFERENCES authors(id),
                    title text NOT NULL);
"""

PROJECT_TEST = """
import os
from sqlalchemy import text
from dbtest import table_state
from dbtest.state import DbtestSnapshotExtension

def _fill(db, name="Ursula"):
    db.execute(text("INSERT INTO authors (name) VALUES (:n), ('Terry')"), {"n": name})
    db.execute(text("INSERT INTO books (author_id, title) SELECT id, 'Book of ' || name "
                    "FROM authors"))

def test_amber(db, snapshot):
    _fill(db)
    assert table_state(db, "authors", "books") == snapshot

def test_txt_file(db, snapshot):
    _fill(db)
    assert table_state(db, "books") == snapshot.use_extension(DbtestSnapshotExtension)

def test_changed(db, snapshot):
    _fill(db, os.environ.get("AUTHOR", "Ursula"))
    assert table_state(db, "authors", "books") == snapshot
"""



def test_snapshot_update_then_pass_then_row_diff(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # pytester moves HOME; keep the real cache so the runs copy a cached cluster
    monkeypatch.setenv("DBTEST_CACHE_DIR", str(CACHE_DIR))
    pytester.makefile(".sql", schema=PROJECT_SCHEMA)
    pytester.makefile(".toml", pyproject=textwrap.dedent('''
        [tool.dbtest]
        schema = "sql:schema.sql"
        [tool.pytest.ini_options]
        pythonpath = ["."]
    '''))
    pytester.makepyfile(test_books=PROJECT_TEST)
    args = ("-p", "no:cacheprovider", "-p", "no:randomly")
    written = pytester.runpytest_subprocess(*args, "--snapshot-update")
    written.assert_outcomes(passed=3)
    amber = (pytester.path / "__snapshots__" / "test_books.ambr").read_text()
    assert '    authors#1 | "Ursula" | <masked>' in amber
    assert '    books#2 | authors#2 | "Book of Terry"' in amber
    txt = pytester.path / "__snapshots__" / "test_books" / "test_txt_file.txt"
    assert txt.read_text().startswith("books: 2 rows, key: id\n  id | author_id | title\n")

    # the second run: unchanged tests pass against the files; a changed one shows rows
    monkeypatch.setenv("AUTHOR", "Octavia")
    second = pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=2, failed=1)
    second.stdout.fnmatch_lines([
        "*table_state differs from the snapshot test_changed*",
        "*~ authors#1: name: \"Ursula\" -> \"Octavia\"*",
        "*~ books#1: title: \"Book of Ursula\" -> \"Book of Octavia\"*",
    ])
