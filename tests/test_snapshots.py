"""Database snapshots: save / restore / list / drop / export / import on a real server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbtest.errors import ConfigError, RefusedError, SnapshotError
from dbtest.provision._server import PostgresServer
from dbtest.settings import Settings
from dbtest.snapshots import (
    drop_snapshot,
    export_snapshot,
    import_snapshot,
    list_snapshots,
    restore_snapshot,
    save_snapshot,
    snapshot_command,
)
from dbtest.state import schema_state, table_state

SETUP = """
CREATE TABLE teams (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE players (id serial PRIMARY KEY, team_id int REFERENCES teams(id),
                      name text NOT NULL, score numeric(6, 2), seen timestamptz);
INSERT INTO teams (name) VALUES ('red'), ('blue');
INSERT INTO players (team_id, name, score, seen)
SELECT 1 + g % 2, 'p' || g, g / 7.0, '2024-01-01'::timestamptz + g * interval '1 hour'
FROM generate_series(1, 500) g;
"""


def _raw(server: PostgresServer, statement: str, db: str = "postgres") -> None:
    with psycopg.connect(server.dsn_for(db), autocommit=True) as conn:
        for part in statement.split(";\n"):
            if part.strip():
                conn.execute(part)


def _drop_raw(server: PostgresServer, name: str) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _contents(server: PostgresServer, db: str) -> str:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(server.url_for(db), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return table_state(conn, labels=False).text + "\n" + schema_state(conn).text
    finally:
        engine.dispose()


@pytest.fixture
def source(own_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with two tables and 502 rows, created (and marked) by dbtest."""
    name = f"h6src_{request.node.name[-20:]}".lower()
    own_server.create_database(name)
    _raw(own_server, SETUP, name)
    yield name
    for snap in list_snapshots(own_server):
        drop_snapshot(own_server, snap.name)
    _drop_raw(own_server, name)


def test_round_trip_restores_identical_contents(own_server: PostgresServer, source: str
                                                ) -> None:
    before = _contents(own_server, source)
    info = save_snapshot(own_server, source, "base")
    assert (info.name, info.database, info.source) == ("base", "dbtest_snap_base", source)
    assert info.size_bytes > 0 and info.created
    _raw(own_server, "DELETE FROM players WHERE id % 3 = 0;\nUPDATE teams SET name = 'x' "
                     "WHERE id = 1;\nCREATE TABLE extra (id int PRIMARY KEY)", source)
    assert _contents(own_server, source) != before
    report = restore_snapshot(own_server, "base")
    assert report.database == source and report.kept_original is None
    assert _contents(own_server, source) == before
    # the snapshot itself is untouched by the restore and can be restored again
    _raw(own_server, "DROP TABLE players", source)
    restore_snapshot(own_server, "base", source)
    assert _contents(own_server, source) == before


def test_list_drop_and_unknown_names(own_server: PostgresServer, source: str) -> None:
    save_snapshot(own_server, source, "one")
    save_snapshot(own_server, source, "two")
    assert [s.name for s in list_snapshots(own_server)] == ["one", "two"]
    assert "from " + source in list_snapshots(own_server)[0].describe()
    with pytest.raises(SnapshotError, match=r"already exists.*replace"):
        save_snapshot(own_server, source, "one")
    save_snapshot(own_server, source, "one", replace=True)
    drop_snapshot(own_server, "one")
    with pytest.raises(SnapshotError, match=r"no snapshot named 'one'.*snapshots: two"):
        restore_snapshot(own_server, "one")
    with pytest.raises(SnapshotError, match="not valid"):
        save_snapshot(own_server, source, "bad name!")
    with pytest.raises(SnapshotError, match="does not exist"):
        save_snapshot(own_server, "no_such_db", "three")


def test_open_sessions_are_named_or_terminated(own_server: PostgresServer, source: str
                                               ) -> None:
    holder = psycopg.connect(own_server.dsn_for(source), application_name="h6-holder")
    try:
        with pytest.raises(SnapshotError, match=r"1 open session.*h6-holder.*force=True"):
            save_snapshot(own_server, source, "busy")
        assert not list_snapshots(own_server)
        save_snapshot(own_server, source, "busy", force=True)
        assert holder.closed or holder.broken or _dead(holder)
    finally:
        holder.close()
    holder = psycopg.connect(own_server.dsn_for(source), application_name="h6-holder2")
    try:
        with pytest.raises(SnapshotError, match=r"restore over .*h6-holder2"):
            restore_snapshot(own_server, "busy")
        assert restore_snapshot(own_server, "busy", force=True).terminated
    finally:
        holder.close()


def _dead(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_never_drops_what_dbtest_did_not_create(own_server: PostgresServer, source: str
                                                ) -> None:
    _raw(own_server, "CREATE DATABASE dbtest_snap_foreign")
    try:
        with pytest.raises(RefusedError, match="not created by dbtest"):
            save_snapshot(own_server, source, "foreign")
    finally:
        _drop_raw(own_server, "dbtest_snap_foreign")
    _raw(own_server, "CREATE DATABASE h6_userdb")  # the developer's own database
    kept = None
    try:
        _raw(own_server, SETUP, "h6_userdb")
        before = _contents(own_server, "h6_userdb")
        save_snapshot(own_server, "h6_userdb", "mine")
        _raw(own_server, "DELETE FROM players", "h6_userdb")
        report = restore_snapshot(own_server, "mine")
        kept = report.kept_original
        assert kept and kept.startswith("h6_userdb_pre_restore_")
        assert _contents(own_server, "h6_userdb") == before
        # the replaced database still exists, with the change that was made to it
        with psycopg.connect(own_server.dsn_for(kept)) as conn:
            assert conn.execute("SELECT count(*) FROM players").fetchone() == (0,)
        # the restored copy is dbtest's now: restoring again replaces it, keeps nothing
        assert restore_snapshot(own_server, "mine").kept_original is None
    finally:
        for name in ("h6_userdb", kept):
            if name:
                _drop_raw(own_server, name)


def test_export_import(own_server: PostgresServer, source: str, tmp_path: Path) -> None:
    save_snapshot(own_server, source, "shared")
    dump = export_snapshot(own_server, "shared", tmp_path / "shared.dump")
    assert dump.stat().st_size > 1000 and [p.name for p in tmp_path.iterdir()] == ["shared.dump"]
    imported = import_snapshot(own_server, dump, "imported")
    assert imported.source == "file shared.dump"
    restore_snapshot(own_server, "imported", "h6_imported_copy")
    try:
        assert _contents(own_server, "h6_imported_copy") == _contents(own_server, source)
    finally:
        own_server.drop_database("h6_imported_copy")
    with pytest.raises(SnapshotError, match="not a writable folder"):
        export_snapshot(own_server, "shared", tmp_path / "missing" / "x.dump")
    if os.geteuid() != 0:  # root writes anywhere; a read-only folder only stops others
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SnapshotError, match="not a writable folder"):
            export_snapshot(own_server, "shared", locked / "x.dump")
    (tmp_path / "junk.dump").write_text("not a dump")
    with pytest.raises(SnapshotError, match=r"pg_restore of .*junk\.dump failed"):
        import_snapshot(own_server, tmp_path / "junk.dump", "junk")
    assert [s.name for s in list_snapshots(own_server)] == ["imported", "shared"]
    with pytest.raises(SnapshotError, match="no such readable file"):
        import_snapshot(own_server, tmp_path / "nope.dump", "nope")


def test_snapshot_command(own_server: PostgresServer, source: str) -> None:
    url = own_server.url_for(source)
    settings = Settings(url=url)
    assert snapshot_command(settings, "list") == "no snapshots"
    nowhere = Settings(cache_dir=Path("/nonexistent-h6"))
    assert snapshot_command(settings, "save", "cli").startswith(f"saved cli  from {source}")
    _raw(own_server, "DELETE FROM teams WHERE false", source)
    out = snapshot_command(Settings(), "restore", "cli", url=own_server.url)
    assert out.startswith(f"restored cli into {source} in ")
    assert "cli  from" in snapshot_command(settings, "list")
    assert snapshot_command(settings, "drop", "cli") == "dropped snapshot cli"
    with pytest.raises(ConfigError, match="needs a server"):
        snapshot_command(nowhere, "list")
    with pytest.raises(ConfigError, match="unknown snapshot action"):
        snapshot_command(settings, "rename", "x")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    from dbtest.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _tables(server: PostgresServer, db: str) -> set[str]:
    with psycopg.connect(server.dsn_for(db)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def test_cli_restores_into_the_urls_own_database(own_server: PostgresServer, source: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = own_server.url_for(source)
    _cli(capsys, "snapshot", "save", "own", "--url", url)
    _raw(own_server, "DROP TABLE players", source)
    out = _cli(capsys, "snapshot", "restore", "own", "--url", url)
    assert out.startswith(f"restored own into {source} in ")
    assert _tables(own_server, source) == {"teams", "players"}


def test_cli_restores_into_postgres_itself(own_server: PostgresServer,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    url = own_server.url_for("postgres")
    _raw(own_server, "CREATE TABLE h6_marker (id int)")
    kept = None
    try:
        _cli(capsys, "snapshot", "save", "pg", "--url", url)
        _raw(own_server, "DROP TABLE h6_marker; CREATE TABLE h6_after (id int)")
        out = _cli(capsys, "snapshot", "restore", "pg", "--url", url, "--force")
        assert out.startswith("restored pg into postgres in "), out
        assert "h6_marker" in _tables(own_server, "postgres")
        assert "h6_after" not in _tables(own_server, "postgres")
        kept = out.rsplit("is kept as ", 1)[1].split()[0]  # postgres was not dbtest's
        assert "h6_after" in _tables(own_server, kept)
    finally:
        _raw(own_server, "DROP TABLE IF EXISTS h6_marker; DROP TABLE IF EXISTS h6_after")
        drop_snapshot(own_server, "pg")
        if kept:
            _drop_raw(own_server, kept)
