"""An Alembic env.py that ignores dbtest's connection is stopped before it connects
elsewhere (issue 20): the other database stays untouched and the error says how to fix
env.py. An env.py that reconnects to the build database itself still works."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from dbtest._databases import admin_connection
from dbtest._templates import TemplateCache, TemplateKey
from dbtest.errors import MigrationError
from dbtest.provision._server import PostgresServer

EXAMPLE = Path(__file__).parents[1] / "migrations_example"

#: env.py as many apps write it: the engine comes from the app's settings, always
OWN_ENGINE_SYNC = '''
import os
from alembic import context
from sqlalchemy import create_engine, pool
from migrations_example.models import Base

engine = create_engine(os.environ["APP_DATABASE_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
'''

OWN_ENGINE_ASYNC = '''
import asyncio
import os
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from migrations_example.models import Base


def do_run(connection):
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


async def main():
    engine = create_async_engine(os.environ["APP_DATABASE_URL"])
    async with engine.begin() as connection:
        await connection.run_sync(do_run)
    await engine.dispose()

asyncio.run(main())
'''

#: an async env.py that ignores the shared connection but honours sqlalchemy.url, which
#: dbtest sets to the build database: allowed (same database, its own connection)
SAME_DATABASE_ASYNC = OWN_ENGINE_ASYNC.replace(
    'os.environ["APP_DATABASE_URL"]',
    'context.config.get_main_option("sqlalchemy.url").replace("+psycopg", "+asyncpg")')


def project_with_env(tmp_path: Path, env_py: str) -> Path:
    project = tmp_path / "migrations_example"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (project / "alembic" / "env.py").write_text(env_py)
    return project / "alembic.ini"


def build(server: PostgresServer, root: Path, ini: Path) -> None:
    TemplateCache(server, root, root / "seeds").get(TemplateKey(f"alembic:{ini}"))


def public_tables(server: PostgresServer, db: str) -> list[str]:
    with psycopg.connect(server.dsn_for(db)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return sorted(r[0] for r in rows)


def dbtest_databases(server: PostgresServer) -> list[str]:
    with admin_connection(server.dsn) as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbtest_tpl%'")
        return [r[0] for r in rows]


@pytest.fixture
def victim(own_server: PostgresServer) -> str:
    """A database that is not dbtest's, on the same server (the app's dev database)."""
    name = "app_dev_database"
    with admin_connection(own_server.dsn) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return name


@pytest.mark.parametrize("env_py", [OWN_ENGINE_SYNC, OWN_ENGINE_ASYNC], ids=["sync", "async"])
def test_env_py_with_its_own_engine_is_stopped_before_it_connects(
        own_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        victim: str, env_py: str) -> None:
    driver = "asyncpg" if "asyncio" in env_py else "psycopg"
    monkeypatch.setenv("APP_DATABASE_URL", own_server.url_for(victim, driver))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = dbtest_databases(own_server)
    with pytest.raises(MigrationError) as err:
        build(own_server, tmp_path, project_with_env(tmp_path, env_py))
    message = str(err.value)
    assert f"env.py tried to connect to database {victim!r}" in message
    assert 'config.attributes.get("connection")' in message
    assert "nothing was kept" not in message
    assert public_tables(own_server, victim) == []  # the app's database was not migrated
    assert dbtest_databases(own_server) == before  # and no template or build db was kept


def test_unreachable_app_database_is_named_not_reported_as_nothing_kept(
        own_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_DATABASE_URL", "postgresql+psycopg://app@127.0.0.1:1/app")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MigrationError, match=r"env.py tried to connect to database 'app' on "
                                             r"127\.0\.0\.1:1 .*refused that connection"):
        build(own_server, tmp_path, project_with_env(tmp_path, OWN_ENGINE_SYNC))


def test_env_py_reconnecting_to_the_build_database_is_allowed(
        own_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    ini = project_with_env(tmp_path, SAME_DATABASE_ASYNC)
    build(own_server, tmp_path, ini)
    name = TemplateCache(own_server, tmp_path, tmp_path / "seeds").get(
        TemplateKey(f"alembic:{ini}")).name
    assert "users" in public_tables(own_server, name)


def test_guard_is_gone_after_the_build(own_server: PostgresServer, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    """After a refused build, connections elsewhere work again (the listener is removed)."""
    monkeypatch.setenv("APP_DATABASE_URL", own_server.url_for(victim))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MigrationError):
        build(own_server, tmp_path, project_with_env(tmp_path, OWN_ENGINE_SYNC))
    from sqlalchemy import create_engine, text

    engine = create_engine(own_server.url_for(victim))
    with engine.connect() as conn:
        assert conn.scalar(text("select current_database()")) == victim
    engine.dispose()
