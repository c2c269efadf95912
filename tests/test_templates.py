"""Template databases: keyed by their inputs, built once, verified, never used when wrong."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import psycopg
import pytest

from dbtest._databases import admin_connection, database_mark
from dbtest._templates import TemplateCache, TemplateKey
from dbtest.errors import ConfigError, MigrationError, TemplateError
from dbtest.provision._server import PostgresServer

EXAMPLE_INI = Path(__file__).parents[1] / "migrations_example" / "alembic.ini"


def cache(server: PostgresServer, root: Path) -> TemplateCache:
    return TemplateCache(server, root, root / "seeds")


def write_sql(root: Path, name: str, text: str) -> None:
    (root / "sql").mkdir(exist_ok=True)
    (root / "sql" / name).write_text(textwrap.dedent(text))


def tables(server: PostgresServer, db: str) -> list[str]:
    with psycopg.connect(server.dsn_for(db)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                            "ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def test_sql_template_is_built_once_then_reused(own_server: PostgresServer,
                                                tmp_path: Path) -> None:
    write_sql(tmp_path, "001.sql", "CREATE TABLE a (id int PRIMARY KEY, note text);"
                                   "INSERT INTO a VALUES (1, '100%');")
    key = TemplateKey("sql:sql/*.sql")
    first = cache(own_server, tmp_path).get(key)
    assert first.built and first.steps == 1
    again = cache(own_server, tmp_path).get(key)  # a new process would do the same
    assert (again.name, again.built, again.steps) == (first.name, False, 0)
    assert tables(own_server, first.name) == ["a"]
    with admin_connection(own_server.dsn) as admin:
        mark = database_mark(admin, first.name)
        assert mark is not None and mark["state"] == "ready"


def test_changing_an_input_changes_the_name(own_server: PostgresServer,
                                            tmp_path: Path) -> None:
    write_sql(tmp_path, "001.sql", "CREATE TABLE a (id int);")
    c = cache(own_server, tmp_path)
    before = c.get(TemplateKey("sql:sql/*.sql")).name
    write_sql(tmp_path, "002.sql", "CREATE TABLE b (id int);")
    after = cache(own_server, tmp_path).get(TemplateKey("sql:sql/*.sql"))
    assert after.name != before and after.built
    assert tables(own_server, after.name) == ["a", "b"]


def test_alembic_template_verified_and_rebuilt_when_wrong(own_server: PostgresServer,
                                                          tmp_path: Path) -> None:
    key = TemplateKey(f"alembic:{EXAMPLE_INI}")
    info = cache(own_server, tmp_path).get(key)
    if not info.built:  # the cached cluster already had it: start from scratch
        own_server.drop_database(info.name)
        info = cache(own_server, tmp_path).get(key)
    assert info.built and info.steps == 5
    # corrupt the template's version table: dbtest must rebuild, not use it
    with admin_connection(own_server.dsn) as admin:
        admin.execute(f'ALTER DATABASE "{info.name}" IS_TEMPLATE false')
    with psycopg.connect(own_server.dsn_for(info.name), autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0003_tags'")
    rebuilt = cache(own_server, tmp_path).get(key)
    assert rebuilt.name == info.name and rebuilt.built and rebuilt.steps == 5


def test_parallel_builders_build_once(own_server: PostgresServer, tmp_path: Path) -> None:
    write_sql(tmp_path, "001.sql", "CREATE TABLE p (id int); SELECT pg_sleep(0.2);")
    results = []

    def build() -> None:
        results.append(cache(own_server, tmp_path).get(TemplateKey("sql:sql/*.sql")))

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.built for r in results) == [False, False, False, True]
    assert len({r.name for r in results}) == 1


def test_half_built_template_from_a_crash_is_replaced(own_server: PostgresServer,
                                                     tmp_path: Path) -> None:
    write_sql(tmp_path, "001.sql", "CREATE TABLE h (id int);")
    c = cache(own_server, tmp_path)
    name = c.name_for(TemplateKey("sql:sql/*.sql"), None)  # schema-less name is different
    info = c.get(TemplateKey("sql:sql/*.sql"))
    own_server.create_database(info.name + "_build", purpose="template")  # crash leftover
    with admin_connection(own_server.dsn) as admin:
        from dbtest._databases import drop_database

        drop_database(admin, info.name)
    again = cache(own_server, tmp_path).get(TemplateKey("sql:sql/*.sql"))
    assert again.built and name != again.name


def test_foreign_database_with_a_template_name_is_refused(own_server: PostgresServer,
                                                          tmp_path: Path) -> None:
    write_sql(tmp_path, "001.sql", "CREATE TABLE f (id int);")
    c = cache(own_server, tmp_path)
    from dbtest._schema import load_schema

    name = c.name_for(TemplateKey("sql:sql/*.sql"), load_schema("sql:sql/*.sql", tmp_path))
    with psycopg.connect(own_server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # not dbtest's
    try:
        with pytest.raises(TemplateError, match="not made by dbtest"):
            c.get(TemplateKey("sql:sql/*.sql"))
    finally:
        with psycopg.connect(own_server.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}"')


def test_sql_syntax_error_names_file_and_line(own_server: PostgresServer,
                                              tmp_path: Path) -> None:
    write_sql(tmp_path, "001.sql", "CREATE TABLE ok (id int);\n\nCREAT TABLE broken (id int);\n")
    with pytest.raises(MigrationError, match=r"001\.sql, line 3: syntax error"):
        cache(own_server, tmp_path).get(TemplateKey("sql:sql/*.sql"))


def test_failing_alembic_revision_is_named(own_server: PostgresServer, tmp_path: Path) -> None:
    import shutil

    project = tmp_path / "ex"
    shutil.copytree(EXAMPLE_INI.parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    rev = project / "alembic" / "versions" / "0003_tags.py"
    failing = 'def upgrade() -> None:\n    op.execute("SELECT 1/0")\n'
    rev.write_text(rev.read_text().replace("def upgrade() -> None:\n", failing))
    with pytest.raises(MigrationError, match=r"revision 0003_tags .*0003_tags\.py:\d+.*"
                                             r"division by zero"):
        cache(own_server, tmp_path).get(TemplateKey(f"alembic:{project / 'alembic.ini'}"))


def test_multiple_heads_are_refused(own_server: PostgresServer, tmp_path: Path) -> None:
    import shutil

    project = tmp_path / "ex"
    shutil.copytree(EXAMPLE_INI.parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "alembic" / "versions" / "0009_side.py").write_text(
        'revision = "0009_side"\ndown_revision = "0003_tags"\nbranch_labels = None\n'
        'depends_on = None\n\n\ndef upgrade() -> None:\n    pass\n\n\n'
        'def downgrade() -> None:\n    pass\n')
    with pytest.raises(MigrationError, match="2 heads"):
        cache(own_server, tmp_path).get(TemplateKey(f"alembic:{project / 'alembic.ini'}"))


@pytest.mark.parametrize(("spec", "message"), [
    ("alembic:nowhere/alembic.ini", "does not exist"),
    ("metadata:no_such_module_xyz:Base", "importing module 'no_such_module_xyz' failed"),
    ("metadata:json:dumps", "neither a MetaData"),
    ("sql:nothing/*.sql", "no file matches"),
    ("callable:json:nope", "has no attribute 'nope'"),
])
def test_bad_schema_sources(own_server: PostgresServer, tmp_path: Path, spec: str,
                            message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cache(own_server, tmp_path).get(TemplateKey(spec))


def test_metadata_module_import_error_is_shown(own_server: PostgresServer,
                                               tmp_path: Path) -> None:
    (tmp_path / "broken_models_mod.py").write_text("import nonexistent_dep_abc\n")
    with pytest.raises(ConfigError, match="nonexistent_dep_abc"):
        cache(own_server, tmp_path).get(TemplateKey("metadata:broken_models_mod:Base"))


# -- freshness: every input of every source kind counts ---------------------------------
def _fresh_import(*names: str) -> None:
    """Forget modules a previous build imported, as a new pytest process would."""
    import sys

    for name in names:
        sys.modules.pop(name, None)


def columns(server: PostgresServer, db: str, table: str) -> list[str]:
    with psycopg.connect(server.dsn_for(db)) as conn:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                            "table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
    return [r[0] for r in rows]


def test_callable_rebuilt_when_a_module_it_imports_changes(
        own_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fr_pkg").mkdir()
    (tmp_path / "fr_pkg" / "__init__.py").write_text("")
    (tmp_path / "fr_pkg" / "cols.py").write_text("COLUMNS = ['id int']\n")
    (tmp_path / "fr_schema.py").write_text(
        "from fr_pkg import cols\n\n\ndef create(connection):\n"
        "    from sqlalchemy import text\n"
        "    connection.execute(text(f\"CREATE TABLE fr ({', '.join(cols.COLUMNS)})\"))\n")
    key = TemplateKey("callable:fr_schema:create")
    first = cache(own_server, tmp_path).get(key)
    (tmp_path / "fr_pkg" / "cols.py").write_text("COLUMNS = ['id int', 'nickname text']\n")
    _fresh_import("fr_schema", "fr_pkg", "fr_pkg.cols")
    second = cache(own_server, tmp_path).get(key)
    assert second.name != first.name and second.built
    assert columns(own_server, second.name, "fr") == ["id", "nickname"]


def test_metadata_rebuilt_when_an_imported_module_changes_what_ddl_does_not_show(
        own_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "md_models.py").write_text(textwrap.dedent('''
        from sqlalchemy import Column, Integer, MetaData, Table
        metadata = MetaData()
        things = Table("things", metadata, Column("id", Integer, primary_key=True))
        import md_events  # noqa: E402  registers DDL that CREATE TABLE does not show
    '''))
    events = '''
        from sqlalchemy import DDL, event
        from md_models import things
        event.listen(things, "after_create", DDL("CREATE VIEW v AS SELECT {} AS x"))
    '''
    (tmp_path / "md_events.py").write_text(textwrap.dedent(events.format(1)))
    key = TemplateKey("metadata:md_models:metadata")
    first = cache(own_server, tmp_path).get(key)
    (tmp_path / "md_events.py").write_text(textwrap.dedent(events.format(2)))
    _fresh_import("md_models", "md_events")
    second = cache(own_server, tmp_path).get(key)
    assert second.name != first.name and second.built
    with psycopg.connect(own_server.dsn_for(second.name)) as conn:
        assert conn.execute("SELECT x FROM v").fetchone() == (2,)


def _alembic_project(tmp_path: Path) -> Path:
    import shutil

    project = tmp_path / "ex"
    shutil.copytree(EXAMPLE_INI.parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def test_alembic_rebuilt_when_env_py_or_a_module_a_revision_imports_changes(
        own_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    project = _alembic_project(tmp_path)
    (tmp_path / "al_consts.py").write_text("LIMIT = 10\n")
    rev = project / "alembic" / "versions" / "0003_tags.py"
    rev.write_text(rev.read_text() + "\nimport al_consts  # noqa: E402,F401\n")
    key = TemplateKey(f"alembic:{project / 'alembic.ini'}")
    names = [cache(own_server, tmp_path).get(key).name]
    (tmp_path / "al_consts.py").write_text("LIMIT = 20\n")
    names.append(cache(own_server, tmp_path).get(key).name)
    env = project / "alembic" / "env.py"
    env.write_text(env.read_text() + "\n# changed\n")
    again = cache(own_server, tmp_path).get(key)
    names.append(again.name)
    assert len(set(names)) == 3 and again.built


def test_schema_inputs_globs_count(own_server: PostgresServer, tmp_path: Path) -> None:
    write_sql(tmp_path, "001.sql", "CREATE TABLE si (id int);")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1\n")
    key = TemplateKey("sql:sql/*.sql")

    def name() -> str:
        return TemplateCache(own_server, tmp_path, tmp_path / "seeds",
                             inputs=("data/**/*.csv",)).get(key).name

    first = name()
    (tmp_path / "data" / "a.csv").write_text("2\n")
    assert name() != first


def test_reuse_is_verified_and_a_changed_template_rebuilt_saying_why(
        own_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "vr_models.py").write_text(
        "from sqlalchemy import Column, Integer, MetaData, Table, Text\nmetadata = MetaData()\n"
        "Table('vr', metadata, Column('id', Integer, primary_key=True), Column('note', Text))\n")
    key = TemplateKey("metadata:vr_models:metadata")
    info = cache(own_server, tmp_path).get(key)
    reused = cache(own_server, tmp_path).get(key)
    assert not reused.built and reused.reason is None and reused.verify_seconds > 0
    with admin_connection(own_server.dsn) as admin:  # a hand edit the fingerprint cannot see
        admin.execute(f'ALTER DATABASE "{info.name}" IS_TEMPLATE false')
    with psycopg.connect(own_server.dsn_for(info.name), autocommit=True) as conn:
        conn.execute("ALTER TABLE vr DROP COLUMN note")
    rebuilt = cache(own_server, tmp_path).get(key)
    assert rebuilt.built and rebuilt.name == info.name
    assert rebuilt.reason == "its tables or columns changed after it was built"
    assert columns(own_server, rebuilt.name, "vr") == ["id", "note"]


def test_template_whose_mark_disagrees_with_the_alembic_heads_is_rebuilt(
        own_server: PostgresServer, tmp_path: Path) -> None:
    from dbtest._databases import mark_database

    key = TemplateKey(f"alembic:{EXAMPLE_INI}")
    info = cache(own_server, tmp_path).get(key)
    with admin_connection(own_server.dsn) as admin:
        mark = database_mark(admin, info.name)
        assert mark is not None and mark["expect"] == "heads 0005_shop"
        mark_database(admin, info.name, purpose="template",
                      mark={**mark, "expect": "heads 0004_old"})
    rebuilt = cache(own_server, tmp_path).get(key)
    assert rebuilt.built and rebuilt.reason is not None and "Alembic heads" in rebuilt.reason


def test_clones_use_file_copy_wherever_the_server_runs_with_fsync_off(
        own_server: PostgresServer) -> None:
    # a dbtest server reached through a URL (detached, or a CI service with fsync=off):
    # FILE_COPY's checkpoint is cheap there too; a server with fsync on keeps the default
    import dataclasses

    from dbtest import _templates

    as_url = dataclasses.replace(own_server, backend="url")
    assert _templates.copy_strategy(own_server) == "file_copy"
    assert _templates.copy_strategy(as_url) is None  # nothing to ask through
    with admin_connection(own_server.dsn) as admin:
        assert _templates.copy_strategy(as_url, admin) == "file_copy"
        _templates._FSYNC_OFF[as_url.dsn] = False  # as if the server had said "on"
        try:
            assert _templates.copy_strategy(as_url, admin) is None
        finally:
            del _templates._FSYNC_OFF[as_url.dsn]
