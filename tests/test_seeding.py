"""Seed sets: resolution, determinism, all-or-nothing, errors, the seed command."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dbtest.errors import ConfigError, SeedError
from dbtest.seeding import (
    SeedProgress,
    load_seeds,
    resolve_sets,
    seed_command,
    seed_fingerprint,
)
from dbtest.seeding._report import ProgressLine
from dbtest.settings import resolve

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
TABLES = ("users", "profiles", "posts", "post_tags", "comments", "orders", "order_items",
          "roles", "tags", "products")


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def _contents(conn: sa.Connection, with_ids: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in TABLES:
        rows = conn.exec_driver_sql(f"SELECT * FROM {table}").all()
        cols = list(conn.exec_driver_sql(f"SELECT * FROM {table} LIMIT 0").keys())
        keep = [i for i, c in enumerate(cols) if with_ids or not c.endswith("id")]
        out[table] = sorted((tuple(r[i] for i in keep) for r in rows), key=repr)
    return out


def _counts(conn: sa.Connection) -> dict[str, int]:
    return {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one()
            for t in TABLES}


# -- sets and dependencies --------------------------------------------------------------
def test_resolution_order_and_requires(tmp_path: Path) -> None:
    folder = _write(tmp_path / "seeds", {
        "a.sql": "-- a comment\n-- requires: b, c\nSELECT 1;\n",
        "b.py": "requires = ['c']\ndef seed(ctx): pass\n",
        "c.py": "def seed(ctx): pass\n",
        "_helper.py": "X = 1\n",
    })
    assert [s.name for s in resolve_sets(["a", "c"], folder)] == ["c", "b", "a"]
    assert [s.name for s in resolve_sets(["demo", "smoke"], SEEDS)] == ["base", "demo", "smoke"]


@pytest.mark.parametrize(("files", "names", "match"), [
    ({"a.py": "def seed(ctx): pass\n"}, ["nope"],
     r"unknown seed set 'nope'; known sets in .*: a\. Add"),
    ({"a.py": "requires = ['b']\n", "b.sql": "-- requires: a\n"}, ["a"],
     r"dependency cycle: a -> b -> a"),
    ({"a.py": "requires = ['gone']\n"}, ["a"],
     r"unknown seed set 'gone' \(required by seed set 'a' \(.*a\.py\)\)"),
    ({"a.py": "requires = compute()\n"}, ["a"], r"a\.py, line 1: 'requires' must be a literal"),
    ({"a.py": "def seed(ctx)\n"}, ["a"], r"a\.py, line 1: syntax error"),
    ({"a.py": "", "a.sql": ""}, ["a"], r"seed set 'a' is defined twice"),
    ({}, ["../etc"], r"invalid seed set name '\.\./etc'"),
])
def test_bad_sets_are_named(tmp_path: Path, files: dict[str, str], names: list[str],
                            match: str) -> None:
    folder = _write(tmp_path / "seeds", files)
    with pytest.raises(SeedError, match=match):
        resolve_sets(names, folder)


def test_missing_seeds_folder(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match=r"seeds folder .* does not exist"):
        resolve_sets(["demo"], tmp_path / "nowhere")


def test_fingerprint_covers_dependencies_helpers_and_seed(tmp_path: Path) -> None:
    folder = _write(tmp_path / "seeds", {"base.py": "def seed(ctx): pass\n",
                                         "top.py": "requires = ['base']\ndef seed(ctx): pass\n"})
    first = seed_fingerprint(["top"], folder, 0)
    assert seed_fingerprint(["top"], folder, 0) == first
    assert seed_fingerprint(["top"], folder, 1) != first
    (folder / "base.py").write_text("def seed(ctx):\n    pass\n")
    second = seed_fingerprint(["top"], folder, 0)
    assert second != first
    (folder / "_shared.py").write_text("X = 2\n")
    assert seed_fingerprint(["top"], folder, 0) != second


# -- loading ----------------------------------------------------------------------------
def test_load_reports_rows_per_table(db_connection: sa.Connection) -> None:
    before = _counts(db_connection)
    events: list[SeedProgress] = []
    report = load_seeds(db_connection, ["smoke"], SEEDS, progress=events.append)
    assert report.sets == ["base", "smoke"]
    assert report.rows == {"posts": 1, "products": 10, "roles": 2, "tags": 8, "users": 1}
    assert report.per_set["smoke"] == {"posts": 1, "users": 1}
    after = _counts(db_connection)
    assert {t: after[t] - before[t] for t in TABLES if after[t] != before[t]} == report.rows
    assert [(e.name, e.event) for e in events if e.event != "rows"] == [
        ("base", "start"), ("base", "done"), ("smoke", "start"), ("smoke", "done")]
    assert "total" in report.table() and "rows/s" in report.table()


def test_same_seed_same_rows_different_seed_different(fresh_db: Any,
                                                      dbtest_server: Any) -> None:
    twin = dbtest_server.create_database(f"{fresh_db.name[:50]}_twin", template=fresh_db.name)
    engine_b = sa.create_engine(dbtest_server.url_for(twin), poolclass=sa.pool.NullPool)
    try:
        with fresh_db.engine.connect() as a, engine_b.connect() as b:
            load_seeds(a, ["demo"], SEEDS, seed=3, scale=2)
            load_seeds(b, ["demo"], SEEDS, seed=3, scale=2)
            first = _contents(a)
            assert first == _contents(b)  # ids included: same sequence values too
            assert len(first["users"]) == 40
            a.rollback()
            load_seeds(a, ["demo"], SEEDS, seed=4, scale=2)
            other = _contents(a, with_ids=False)
            assert other["users"] != _contents(b, with_ids=False)["users"]
            assert other["roles"] == _contents(b, with_ids=False)["roles"]  # fixed data
            a.rollback()
            b.rollback()
    finally:
        engine_b.dispose()
        dbtest_server.drop_database(twin)


def test_failing_seed_leaves_nothing(tmp_path: Path, db_connection: sa.Connection) -> None:
    folder = _write(tmp_path / "seeds", {
        "good.sql": "INSERT INTO roles (name) VALUES ('good');\n",
        "bad.py": """\
            from sqlalchemy import text
            requires = ["good"]

            def seed(ctx):
                ctx.connection.execute(text("INSERT INTO tags (name) VALUES ('bad')"))
                ctx.session.flush()
                raise ValueError("boom")
            """,
    })
    before = _counts(db_connection)
    with pytest.raises(SeedError) as info:
        load_seeds(db_connection, ["bad"], folder)
    message = str(info.value)
    assert "seed set 'bad'" in message and "bad.py, line 7" in message
    assert "ValueError: boom" in message and "nothing was written" in message
    assert _counts(db_connection) == before  # the caller's transaction goes on, empty


@pytest.mark.parametrize(("files", "match"), [
    ({"x.py": "import not_a_module_anywhere\ndef seed(ctx): pass\n"},
     r"seed set 'x' \(.*x\.py, line 1\) failed: ModuleNotFoundError"),
    ({"x.py": "VALUE = 1\n"}, r"x\.py\) has no seed\(ctx\) function"),
    ({"x.sql": "SELECT 1;\n\nINSERT INTO nowhere VALUES (1);\n"},
     r"seed set 'x' \(.*x\.sql, line 3\) failed: relation \"nowhere\" does not exist"),
    ({"x.py": "def seed(ctx):\n    ctx.bulk_insert('roles', [{'name': 'a'}, {'name': 'a'}])\n"},
     r"x\.py, line 2\): bulk_insert into roles: row 2 failed.*uq_roles_name"),
])
def test_seed_errors_name_file_and_line(tmp_path: Path, db_connection: sa.Connection,
                                        files: dict[str, str], match: str) -> None:
    folder = _write(tmp_path / "seeds", files)
    before = _counts(db_connection)
    with pytest.raises(SeedError, match=match):
        load_seeds(db_connection, ["x"], folder)
    assert _counts(db_connection) == before


def test_bad_scale_and_seed(db_connection: sa.Connection) -> None:
    with pytest.raises(SeedError, match="scale must be"):
        load_seeds(db_connection, ["base"], SEEDS, scale=0)
    with pytest.raises(SeedError, match="seed number must be"):
        load_seeds(db_connection, ["base"], SEEDS, seed=-1)


def test_factories_in_a_seed(tmp_path: Path, db_connection: sa.Connection) -> None:
    from migrations_example.factories import UserFactory

    folder = _write(tmp_path / "seeds", {"f.py": """\
        def seed(ctx):
            users = ctx.factories.UserFactory.create_batch(60)
            assert all(u.id for u in users)
            ctx.factories.create_batch(ctx.factories.ProfileFactory, 3)
        """})
    UserFactory.reset_sequence(5)
    report = load_seeds(db_connection, ["f"], folder)
    assert report.rows == {"profiles": 3, "users": 63}
    emails = db_connection.exec_driver_sql("SELECT min(email) FROM users "
                                           "WHERE email LIKE 'user1%%'").scalar()
    assert emails == "user1000000@example.com"  # seeds count from 1,000,000
    assert UserFactory._meta.next_sequence() == 5  # the test's own sequence is untouched
    from dbtest.factories import current_session

    with pytest.raises(ConfigError, match="no session is bound"):  # unbound after the seed
        current_session()


@pytest.mark.dbtest(seeds=["demo"])
def test_marker_seeds_the_template(db: Any) -> None:
    from migrations_example.models import Role, User

    assert db.scalar(sa.select(sa.func.count()).select_from(User)) == 20
    assert db.scalar(sa.select(sa.func.count()).select_from(Role)) == 2


# -- the command ------------------------------------------------------------------------
def _settings(seeds: Path = SEEDS) -> Any:
    return resolve({"seeds": str(seeds)}, read_env=False, root=ROOT)


def test_seed_command_end_to_end(fresh_db: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    # dry run: loads, reports, rolls back
    dry = seed_command(_settings(), ["smoke"], url=fresh_db.dsn, dry_run=True, out=out,
                       progress=False)
    assert dry.rows == {"posts": 1, "products": 10, "roles": 2, "tags": 8, "users": 1}
    assert "rolled back (dry run)" in out.getvalue()
    with fresh_db.engine.connect() as conn:
        assert _counts(conn)["users"] == 0
    report = seed_command(_settings(), ["demo"], url=fresh_db.url, seed=2, scale=2, out=out,
                          err=err)
    assert report.committed and report.rows["users"] == 40
    with fresh_db.engine.connect() as conn:
        assert _counts(conn)["users"] == 40
        assert _counts(conn)["roles"] == 2
    table = out.getvalue()
    assert "users" in table and "committed" in table and "rows/s" in table
    assert "[2/2] demo" in err.getvalue()  # one progress line per set when not a terminal


def test_seed_command_default_url(fresh_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbtest import commands

    monkeypatch.setattr(commands, "detached_server_url", lambda cache_dir: None)
    with pytest.raises(SeedError, match="dbtest up --detach"):
        seed_command(_settings(), ["base"], progress=False, out=io.StringIO())
    monkeypatch.setattr(commands, "detached_server_url", lambda cache_dir: fresh_db.url)
    report = seed_command(_settings(), ["base"], progress=False, out=io.StringIO())
    assert report.rows["roles"] == 2


def test_seed_command_without_schema(dbtest_server: Any) -> None:
    name = "dbtest_seed_noschema_" + os.urandom(3).hex()
    dbtest_server.create_database(name)
    try:
        with pytest.raises(SeedError, match=r"seed set 'base' .*relation \"\w+\" does not "
                                            r"exist in database .*lacks the schema"):
            seed_command(_settings(), ["base"], url=dbtest_server.url_for(name),
                         progress=False, out=io.StringIO())
    finally:
        dbtest_server.drop_database(name)


def test_seed_command_bad_inputs(fresh_db: Any) -> None:
    with pytest.raises(SeedError, match=r"known sets in .*base, demo, smoke"):
        seed_command(_settings(), [], url=fresh_db.url)
    with pytest.raises(SeedError, match="unknown seed set 'dmeo'"):
        seed_command(_settings(), ["dmeo"], url=fresh_db.url)
    with pytest.raises(SeedError, match="not a PostgreSQL URL"):
        seed_command(_settings(), ["base"], url="mysql://x/y")
    with pytest.raises(SeedError, match="cannot connect to postgresql://u:\\*\\*\\*@"):
        seed_command(_settings(), ["base"], url="postgresql://u:secret@127.0.0.1:1/x",
                     progress=False)


def test_ctrl_c_rolls_back(tmp_path: Path, fresh_db: Any) -> None:
    folder = _write(tmp_path / "seeds", {"slow.py": """\
        import os, time
        from sqlalchemy import text

        def seed(ctx):
            ctx.connection.execute(text("INSERT INTO roles (name) VALUES ('half')"))
            open(os.environ["READY_FILE"], "w").close()
            time.sleep(30)
        """})
    ready = tmp_path / "ready"
    script = ("import sys; from dbtest.settings import resolve; "
              "from dbtest.seeding import seed_command; "
              f"seed_command(resolve({{'seeds': {str(folder)!r}}}, read_env=False), ['slow'], "
              f"url={fresh_db.url!r})")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "READY_FILE": str(ready)})
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "interrupted (Ctrl-C)" in err and "nothing was written" in err
    with fresh_db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM roles WHERE name = 'half'"
                                    ).scalar() == 0


def test_progress_line_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    line = ProgressLine(stream)
    line(SeedProgress("demo", 0, 1, 0, None, "start"))
    line(SeedProgress("demo", 0, 1, 50, 100, "rows"))
    line(SeedProgress("demo", 0, 1, 100, 100, "done"))
    text = stream.getvalue()
    assert "\r[1/1] demo [" in text and "100/100 rows" in text and text.endswith("\n")
