"""Plugging dbtest into an app that owns its engine and sessions (``plug_app``), the driver
settings, the ``callable:`` build contract and the per-process ``setup`` hook.

The example project of the docs (``docs/examples/integration``: a global engine built at
import, a sessionmaker, a scoped_session used by factory-boy with ``"commit"``
persistence, tenant tables behind a ``schema_translate_map``, a callable schema with DDL
that needs psycopg2) runs as its own pytest session, first building its template, then
reusing it.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "integration"
CONFTEST_MAX_LINES = 15

pytest.importorskip("psycopg2", reason="the example app's driver is psycopg2 "
                    "(pip install psycopg2-binary, in the dev extra)")


def _example(pytester: pytest.Pytester) -> None:
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    # a template of this test's own: the first run builds it, the second reuses it
    init = pytester.path / "tenantapp" / "init.py"
    init.write_text(init.read_text() + f"\n# {uuid.uuid4().hex}\n")
    pyproject = pytester.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() +
                         'asyncio_default_fixture_loop_scope = "function"\n')


def _conftest_lines() -> int:
    text = (EXAMPLE / "conftest.py").read_text()
    body = text.split("[start:conftest]")[1].split("# --8<--")[0]
    return sum(1 for line in body.splitlines()[1:] if line.strip())


def test_the_pattern_fits_a_short_conftest() -> None:
    assert _conftest_lines() <= CONFTEST_MAX_LINES


def test_example_app_passes_on_build_and_on_reuse(pytester: pytest.Pytester) -> None:
    _example(pytester)
    built = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    built.assert_outcomes(passed=8)
    assert "built, 1 migration step(s)" in built.stdout.str()
    reused = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    reused.assert_outcomes(passed=8)
    assert "reused" in reused.stdout.str() and "built" not in reused.stdout.str()
    # without the setup hook, the reuse run misses the app's in-process init
    pyproject = pytester.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("\nsetup = ", "\n# setup = "))
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert without.parseoutcomes().get("failed", 0) >= 1


def test_example_app_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist", reason="pytest-xdist is in the dev extra")
    _example(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=8)


ASYNC_PSYCOPG_TEST = """
import pytest
from sqlalchemy import text

async def test_async_db_on_psycopg(async_db):
    assert async_db.bind.dialect.driver == "psycopg"
    assert await async_db.scalar(text("SHOW search_path")) == "tenant,public"

def test_sync_connect_args(db, db_engine, fresh_db):
    assert db.get_bind().dialect.driver == "psycopg2"
    assert db.scalar(text("SHOW search_path")) == "tenant,public"
    assert db_engine.dialect.driver == "psycopg2"
    assert fresh_db.url.startswith("postgresql+psycopg2://")
    with fresh_db.engine.connect() as conn:
        assert conn.scalar(text("SHOW search_path")) == "tenant,public"
"""


def test_driver_and_connect_args_settings(pytester: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyprojecttoml(
        '[tool.dbtest]\ndriver = "psycopg2"\nasync_driver = "psycopg"\n'
        '[tool.dbtest.connect_args]\noptions = "-csearch_path=tenant,public"\n'
        '[tool.pytest.ini_options]\nasyncio_mode = "auto"\n'
        'asyncio_default_fixture_loop_scope = "function"\n')
    # connect_args are libpq's: the async engine gets its search_path another way
    monkeypatch.setenv("PGOPTIONS", "-csearch_path=tenant,public")
    pytester.makepyfile(ASYNC_PSYCOPG_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


IMPORT_TIME_APP = """
import os

from sqlalchemy import create_engine, text

engine = create_engine(os.environ["APP_DATABASE_URL"])   # the app connects at import
with engine.connect() as conn:                          # (its create_all finds the tables)
    SEEN_AT_IMPORT = conn.scalar(text("SELECT current_database() || count(*) FROM things"))
engine.dispose()

def test_the_app_reached_the_test_database(db):
    assert SEEN_AT_IMPORT == db.scalar(text("SELECT current_database() || 0"))
"""


def test_database_url_for_apps_that_connect_at_import(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import os\n\nimport dbtest\n\n\n"
        "def pytest_sessionstart(session):\n"
        "    os.environ['APP_DATABASE_URL'] = dbtest.database_url(session.config)\n")
    pytester.makepyfile(IMPORT_TIME_APP)
    pytester.makefile(".sql", schema="CREATE TABLE things (id int);")
    pytester.makepyprojecttoml('[tool.dbtest]\nschema = "sql:schema.sql"\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


CONTEXT_SCOPED = """
import contextvars

from sqlalchemy.orm import scoped_session, sessionmaker

request_ctx = contextvars.ContextVar("request_ctx")
Session = scoped_session(sessionmaker(), scopefunc=request_ctx.get)   # Flask-SQLAlchemy-like
"""


def test_scoped_session_whose_scope_needs_a_context(pytester: pytest.Pytester) -> None:
    # a test outside the app's context (a CLI test with the database mocked) must not fail
    pytester.makepyfile(ctx_app=CONTEXT_SCOPED)
    pytester.makeconftest("from dbtest import plug_app\n\n"
                          "dbtest_app = plug_app('ctx_app:Session')\n")
    pytester.makepyfile("import pytest\n"
                        "from ctx_app import Session\n\n"
                        "def test_outside_the_context():\n"
                        "    with pytest.raises(LookupError):\n"
                        "        Session()\n")
    pytester.makeini("[pytest]\npythonpath = .\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


ASYNC_APP = """
import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine(os.environ["APP_URL"])   # built at import, never used as is


async def test_async_engine_follows_the_test_database(async_db):
    async with engine.connect() as conn:
        mine = await conn.scalar(text("SELECT current_database()"))
    await engine.dispose()
    assert mine == await async_db.scalar(text("SELECT current_database()"))
"""


def test_async_engine(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "postgresql+asyncpg://app:secret@db.invalid:5432/app")
    pytester.makepyfile(ASYNC_APP)
    pytester.makeconftest("from dbtest import plug_app\n\n"
                          "dbtest_app = plug_app('test_async_engine:engine')\n")
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nasyncio_mode = "auto"\n'
                               'asyncio_default_fixture_loop_scope = "function"\n'
                               'pythonpath = ["."]\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


RESET_APP = """
import os

from sqlalchemy import create_engine, text

engine = create_engine(os.environ["APP_URL"])


def test_1_commits_through_the_app_engine(db):
    with engine.begin() as conn:             # a real commit: leaked, the database is reset
        conn.execute(text("INSERT INTO t VALUES (1)"))


def test_2_the_app_engine_still_works_after_the_reset(db):
    with engine.connect() as conn:           # its pooled connection died with the old database
        assert conn.scalar(text("SELECT 1")) == 1
"""


def test_app_engine_survives_a_leak_reset(pytester: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "postgresql+psycopg://app@db.invalid/app")
    monkeypatch.setenv("DBTEST_LEAKS", "warn")
    monkeypatch.setenv("DBTEST_SCHEMA", "sql:schema.sql")
    pytester.makefile(".sql", schema="CREATE TABLE t (id int);")
    pytester.makepyfile(RESET_APP)
    pytester.makeconftest("from dbtest import plug_app\n\n"
                          "dbtest_app = plug_app('test_app_engine_survives_a_leak_reset:engine')\n")
    pytester.makeini("[pytest]\npythonpath = .\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, warnings=1)


BAD_TARGET = """
from dbtest import plug_app

dbtest_app = plug_app({target!r})
"""


@pytest.mark.parametrize(("target", "expected"), [
    ("nosuchapp.db:engine", "importing module 'nosuchapp.db' of 'nosuchapp.db:engine' failed"),
    ("os:no_engine", "'os:no_engine' does not resolve"),
    ("os:sep", "is a builtins.str, not an Engine, AsyncEngine, sessionmaker, scoped_session, "
             "async_sessionmaker or async_scoped_session"),
    ("sqlalchemy.ext.asyncio:async_sessionmaker.__call__",
     "is a builtins.function, not an Engine"),
])
def test_bad_targets_name_the_culprit(pytester: pytest.Pytester, target: str,
                                      expected: str) -> None:
    pytester.makeconftest(BAD_TARGET.format(target=target))
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*ConfigError*{expected}*"])


LEAVES_OPEN = """
from sqlalchemy import create_engine

kept = []

def build(connection, ctx):
    engine = create_engine(ctx.url)
    kept.append(engine.connect())          # never closed
"""


def test_callable_leaving_a_connection_open(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(leaky_schema=LEAVES_OPEN + f"# {uuid.uuid4().hex}\n")
    pytester.makepyprojecttoml('[tool.dbtest]\nschema = "callable:leaky_schema:build"\n'
                               '[tool.pytest.ini_options]\npythonpath = ["."]\n')
    pytester.makepyfile("def test_x(db): pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TemplateError*callable:leaky_schema:build*left 1 "
                                 "connection(s) open on the build database*Close every*"])


ALEMBIC_URL = """
from alembic.config import Config
from sqlalchemy import create_engine, text

def build(connection, ctx):
    config = Config()
    config.set_main_option("sqlalchemy.url", ctx.alembic_url)   # no interpolation error
    assert "%" not in ctx.url
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        assert conn.scalar(text("select current_database()")) == ctx.database
    engine.dispose()
    assert ctx.url_for("asyncpg").startswith("postgresql+asyncpg://")
    connection.exec_driver_sql("create table built (id int)")
"""


def test_build_context_url_works_for_alembic_and_the_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ctx_schema=ALEMBIC_URL + f"# {uuid.uuid4().hex}\n")
    pytester.makepyprojecttoml('[tool.dbtest]\nschema = "callable:ctx_schema:build"\n'
                               '[tool.pytest.ini_options]\npythonpath = ["."]\n')
    pytester.makepyfile("from sqlalchemy import text\n"
                        "def test_x(db):\n"
                        "    assert db.scalar(text('select count(*) from built')) == 0\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


# -- settings ------------------------------------------------------------------------------
def test_integration_settings_from_pyproject_and_env(tmp_path: Path) -> None:
    from dbtest.settings import resolve

    (tmp_path / "pyproject.toml").write_text(
        '[tool.dbtest]\ndriver = "psycopg2"\nsetup = "app.db:configure"\n'
        '[tool.dbtest.execution_options]\nschema_translate_map = {tenant = "acme"}\n')
    s = resolve(environ={"DBTEST_CONNECT_ARGS": '{"options": "-csearch_path=x"}',
                         "DBTEST_ASYNC_DRIVER": "psycopg"}, root=tmp_path)
    assert (s.driver, s.async_driver, s.setup) == ("psycopg2", "psycopg", "app.db:configure")
    assert s.execution_options == {"schema_translate_map": {"tenant": "acme"}}
    assert s.connect_args == {"options": "-csearch_path=x"}
    assert s.replace(driver="psycopg").driver == "psycopg"


@pytest.mark.parametrize(("env", "expected"), [
    ({"DBTEST_DRIVER": "pg8000"}, "DBTEST_DRIVER must be one of psycopg, psycopg2"),
    ({"DBTEST_ASYNC_DRIVER": "psycopg2"}, "DBTEST_ASYNC_DRIVER must be one of asyncpg, psycopg"),
    ({"DBTEST_EXECUTION_OPTIONS": "{nope"}, "DBTEST_EXECUTION_OPTIONS must be a JSON object"),
    ({"DBTEST_CONNECT_ARGS": "[1]"}, "DBTEST_CONNECT_ARGS must be a table of options"),
    ({"DBTEST_SETUP": "app.db.configure"}, "DBTEST_SETUP must be 'module:function'"),
])
def test_bad_integration_settings(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    from dbtest.errors import ConfigError
    from dbtest.settings import resolve

    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        resolve(environ=env, pyproject=None, root=tmp_path)


def test_driver_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from dbtest.errors import ConfigError
    from dbtest.settings import resolve

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg2" else real(name, *a))
    with pytest.raises(ConfigError, match=r"DBTEST_DRIVER = 'psycopg2', but the psycopg2 "
                       r"package is not installed\. Install it \(pip install psycopg2-binary\)"):
        resolve(environ={"DBTEST_DRIVER": "psycopg2"}, pyproject=None, root=tmp_path)


def test_setup_hook_errors_name_the_setting(tmp_path: Path) -> None:
    from dbtest._build import run_setup
    from dbtest.errors import ConfigError
    from dbtest.settings import resolve

    s = resolve(environ={"DBTEST_SETUP": "os:sep"}, pyproject=None, root=tmp_path)
    with pytest.raises(ConfigError, match="setup setting: 'os:sep' is a str, not a function"):
        run_setup(s)
    s = resolve(environ={"DBTEST_SETUP": "nosuchmodule_x:f"}, pyproject=None, root=tmp_path)
    with pytest.raises(ConfigError, match="setup setting: importing module 'nosuchmodule_x'"):
        run_setup(s)


def test_render_url_has_no_percent_for_a_socket_host() -> None:
    from sqlalchemy.engine import make_url

    from dbtest._build import render_url

    url = make_url("postgresql+psycopg://me@/db?host=/tmp/dbtest-x/sock&port=5432")
    assert "%2F" in url.render_as_string(hide_password=False)   # SQLAlchemy's own rendering
    assert render_url(url) == "postgresql+psycopg://me@/db?host=/tmp/dbtest-x/sock&port=5432"
    secret = make_url("postgresql+psycopg2://me:p%40ss@db.example:5433/app")
    assert render_url(secret) == "postgresql+psycopg2://me:p%40ss@db.example:5433/app"
    assert make_url(render_url(secret)).password == "p@ss"


FIXTURE_PLUG_TESTS = '''
import dbtest
from sqlalchemy import make_url, text


def test_a_unit_test_gets_no_database(request, dbtest_app):
    assert dbtest_app is None  # nothing of the app's here: no fresh database cloned
    assert "_dbtest_fresh" not in request.fixturenames


def test_one_using_the_apps_engine_gets_a_fresh_database(request, engine):
    with engine.connect() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar()
    assert "_dbtest_fresh" in request.fixturenames
    assert name != make_url(dbtest.database_url(request.config)).database
'''


def test_fixture_targets_plug_only_the_tests_that_use_them(pytester: pytest.Pytester) -> None:
    # a suite's unit tests paid for a fresh database each (litestar-fullstack: 208 of 633)
    pytester.makefile(".sql", schema="CREATE TABLE things (name text);")
    pytester.makepyprojecttoml('[tool.dbtest]\nschema = "sql:schema.sql"\n'
                               'isolation = "fresh"\n')
    pytester.makeconftest("import dbtest, pytest\nfrom sqlalchemy import create_engine\n\n"
                          "dbtest_app = dbtest.plug_app('fixture:engine')\n\n\n"
                          "@pytest.fixture(scope='session')\n"
                          "def engine(pytestconfig):\n"
                          "    return create_engine(dbtest.database_url(pytestconfig))\n")
    pytester.makepyfile(test_app=FIXTURE_PLUG_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
