"""The plugin as a user meets it: pytester projects run in a subprocess."""

from __future__ import annotations

import pytest

from tests._projects import ITEM_MODELS, metadata_project, run

pytest_plugins = ["pytester"]

MODELS = ITEM_MODELS


def unique_models(p: pytest.Pytester) -> str:
    """MODELS with DDL no other run has (a server default naming this test's folder), so
    the template's hash is new and a first run must build it."""
    return MODELS + (f"    tag: Mapped[str] = mapped_column(String(200), "
                     f"server_default={str(p.path)!r})\n")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return metadata_project(pytester)


def test_every_fixture(project: pytest.Pytester) -> None:
    project.makepyfile(test_all='''
        from sqlalchemy import func, select, text
        from app_models import Item

        def test_server(dbtest_server):
            assert dbtest_server.version.split(".")[0].isdigit()
            assert dbtest_server.backend in ("local", "embedded", "docker", "url")

        def test_engine(db_engine):
            with db_engine.connect() as c:
                assert c.execute(text("select count(*) from items")).scalar() == 0

        def test_db_commit_is_rolled_back(db):
            db.add(Item(name="a"))
            db.commit()
            with db.begin_nested():
                db.add(Item(name="b"))
            db.rollback()
            assert db.scalar(select(func.count()).select_from(Item)) == 1

        def test_db_starts_clean(db, db_connection):
            assert db.scalar(select(func.count()).select_from(Item)) == 0
            assert db.connection() is db_connection or db.connection().connection \\
                is db_connection.connection

        async def test_async_db(async_db, async_db_connection):
            async_db.add(Item(name="c"))
            await async_db.commit()
            assert await async_db.scalar(select(func.count()).select_from(Item)) == 1
            n = (await async_db_connection.execute(text("select count(*) from items"))).scalar()
            assert n == 1

        async def test_async_db_starts_clean(async_db):
            assert await async_db.scalar(select(func.count()).select_from(Item)) == 0

        async def test_async_engine(async_db_engine):
            async with async_db_engine.connect() as c:
                assert (await c.execute(text("select 1"))).scalar() == 1

        def test_fresh_db_commits_for_real(fresh_db):
            with fresh_db.engine.begin() as c:
                c.execute(text("insert into items (name) values ('x')"))
            with fresh_db.engine.connect() as c:
                assert c.execute(text("select count(*) from items")).scalar() == 1
            assert fresh_db.name.startswith("dbtest_f_") and fresh_db.dsn and fresh_db.async_url

        def test_fresh_db_is_new_each_time(fresh_db):
            with fresh_db.engine.connect() as c:
                assert c.execute(text("select count(*) from items")).scalar() == 0
    ''')
    result = run(project)
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(["*template dbtest_tpl_* (metadata:app_models:Base)*"])


def test_marker_isolation_fresh_commits_for_real(project: pytest.Pytester) -> None:
    project.makepyfile(test_fresh='''
        import pytest
        from sqlalchemy import create_engine, text

        @pytest.mark.dbtest(isolation="fresh")
        def test_commit_visible_elsewhere(db):
            db.execute(text("insert into items (name) values ('real')"))
            db.commit()
            other = create_engine(db.get_bind().engine.url)
            with other.connect() as c:
                assert c.execute(text("select count(*) from items")).scalar() == 1
            other.dispose()
    ''')
    run(project).assert_outcomes(passed=1)


def test_marker_schema(project: pytest.Pytester) -> None:
    project.makepyfile(other_schema='''
        def create(connection):
            from sqlalchemy import text
            connection.execute(text("create table gadgets (id int)"))
    ''', test_marker='''
        import pytest
        from sqlalchemy import text

        @pytest.mark.dbtest(schema="callable:other_schema:create")
        def test_other_schema(db):
            assert db.execute(text("select count(*) from gadgets")).scalar() == 0

        @pytest.mark.dbtest(schema="callable:other_schema:create")
        def test_db_connection_too(db_connection):
            assert db_connection.execute(text("select count(*) from gadgets")).scalar() == 0
    ''')
    run(project).assert_outcomes(passed=2)  # bad markers: tests/test_user_errors.py


LEAKY = '''
    from sqlalchemy import create_engine, func, select, text
    from app_models import Item

    def test_leaks(db, db_engine):
        db.add(Item(name="mine"))          # the test's own write to the same table...
        db.flush()
        with db_engine.begin() as other:   # ...must not make a second connection wait
            other.execute(text("insert into items (name) values ('leaked')"))
        db.commit()

    def test_next_starts_clean(db):
        assert db.scalar(select(func.count()).select_from(Item)) == 0
'''


def test_leak_is_an_error_naming_tables(project: pytest.Pytester) -> None:
    project.makepyfile(test_leak=LEAKY)
    result = run(project)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*LeakError*test_leaks committed data outside its savepoint*"
                                 "public.items*isolation=*fresh*"])


def test_leak_warn_mode(project: pytest.Pytester) -> None:
    project.makepyfile(test_leak=LEAKY)
    result = run(project, "--dbtest-leaks=warn", "-W", "default")
    result.assert_outcomes(passed=2, warnings=1)


def test_no_database_fixture_starts_no_server_and_imports_nothing(
        project: pytest.Pytester) -> None:
    project.makepyfile(test_plain='''
        import sys

        def test_plain():
            assert 1 + 1 == 2

        def test_no_heavy_imports():
            assert "sqlalchemy" not in sys.modules
            assert "psycopg" not in sys.modules
            # Faker's plugin (installed with dbtest) would build a Faker in every run
            assert "faker.providers.person.en_US" not in sys.modules
    ''')
    # items: no speculative start at session start (which [tool.dbtest] would ask for and
    # the end of collection cancels; tests/test_prestart.py covers it)
    result = run(project, "--dbtest-prestart=items")
    result.assert_outcomes(passed=2)
    assert "PostgreSQL" not in result.stdout.str()


def test_template_reused_across_runs(project: pytest.Pytester) -> None:
    project.makepyfile(test_one='''
        def test_one(db):
            pass
    ''')
    # a schema no other run has: the first run must build it, the second reuse it. A cache
    # of its own: concurrent runs that persist other templates would replace the cached
    # cluster in between (last writer wins; see docs/provisioning.md)
    project.makepyfile(app_models=unique_models(project))
    project._monkeypatch.setenv("DBTEST_CACHE_DIR", str(project.path / "cache"))
    first = run(project)
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*template dbtest_tpl_*: built, 1 migration step(s) applied*"])
    second = run(project)
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["*template dbtest_tpl_*: reused (verified in * ms) in * ms"])
    assert "0 migration steps" not in second.stdout.str()


def test_faker_is_seeded_per_test_and_wins_over_fakers_plugin(
        project: pytest.Pytester) -> None:
    project.makepyfile(test_fake='''
        import json, os

        def test_a(faker):
            with open(os.environ["OUT"], "a") as fh:
                fh.write(json.dumps(["a", faker.name(), faker.random_int()]) + "\\n")

        def test_b(faker):
            with open(os.environ["OUT"], "a") as fh:
                fh.write(json.dumps(["b", faker.name(), faker.random_int()]) + "\\n")
    ''')
    out = project.path / "out.txt"
    project._monkeypatch.setenv("OUT", str(out))
    run(project).assert_outcomes(passed=2)
    run(project).assert_outcomes(passed=2)
    lines = out.read_text().splitlines()
    assert lines[:2] == lines[2:]  # same test -> same values on every run
    assert lines[0].split(",")[1:] != lines[1].split(",")[1:]  # different tests differ
    run(project, "--dbtest-seed=7").assert_outcomes(passed=2)
    assert out.read_text().splitlines()[4:] != lines[:2]


def test_keep_failed_prints_url(project: pytest.Pytester) -> None:
    project.makepyfile(test_kf='''
        def test_fails(fresh_db):
            assert False
    ''')
    result = run(project, "--dbtest-keep-failed")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kept database of failed test_kf.py::test_fails: "
                                 "postgresql+psycopg://*dbtest_f_*"])


def test_open_connection_on_fresh_db_is_reported(project: pytest.Pytester) -> None:
    project.makepyfile(test_open='''
        import psycopg
        KEEP = []

        def test_leaves_connection_open(fresh_db):
            KEEP.append(psycopg.connect(fresh_db.dsn))
    ''')
    result = run(project, "-W", "default")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*test_leaves_connection_open left 1 connection(s) open*"])


def test_xdist_workers_share_one_server_and_build_the_template_once(
        project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    project.makepyfile(app_models=unique_models(project))
    project.makepyfile(test_many='''
        import pytest
        from sqlalchemy import func, select, text
        from app_models import Item

        @pytest.mark.parametrize("i", range(24))
        def test_insert(db, i):
            db.add(Item(name=f"n{i}"))
            db.commit()
            assert db.scalar(select(func.count()).select_from(Item)) == 1

        @pytest.mark.parametrize("i", range(6))
        def test_fresh(fresh_db, i):
            with fresh_db.engine.begin() as c:
                c.execute(text("insert into items (name) values ('same name')"))
    ''')
    result = run(project, "-n", "2")
    result.assert_outcomes(passed=30)
    out = result.stdout.str()
    assert out.count(": built, 1 migration step(s) applied by gw") == 1, out
    assert out.count(": reused (verified in ") == 1, out


def test_a_detached_server_is_used_by_later_runs(project: pytest.Pytester,
                                                 tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    from dbtest import commands
    from dbtest.settings import resolve

    cache = tmp_path_factory.mktemp("detached-cache")
    # started for this project (auto joins only those: issue 12)
    settings = resolve({"cache_dir": str(cache)}, environ={}, pyproject=None,
                       root=project.path)
    up = commands.up(settings, detach=True)
    try:
        project.makepyfile(test_one='''
            def test_one(dbtest_server, db):
                assert dbtest_server.backend == "url"
        ''')
        project._monkeypatch.setenv("DBTEST_CACHE_DIR", str(cache))
        result = run(project)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([f"*server: detached, pid {up.pid}, started by dbtest up "
                                     f"at *, PostgreSQL *"])
        assert up.url
    finally:
        commands.down(settings)


def test_broken_transaction_and_raw_commit(project: pytest.Pytester) -> None:
    project.makepyfile(test_edge='''
        import pytest
        from sqlalchemy import func, select, text
        from sqlalchemy.exc import IntegrityError
        from app_models import Item

        def test_leaves_transaction_aborted(db_connection):
            db_connection.execute(text("insert into items (name) values ('a')"))
            with pytest.raises(IntegrityError):
                db_connection.execute(text("insert into items (name) values ('a')"))
            # no rollback: teardown must cope with the aborted transaction

        def test_raw_commit(db_connection):
            db_connection.execute(text("insert into items (name) values ('b')"))
            db_connection.exec_driver_sql("COMMIT")

        def test_clean_afterwards(db):
            assert db.scalar(select(func.count()).select_from(Item)) == 0
    ''')
    result = run(project)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_raw_commit*",
                                 "*LeakError: test_edge.py::test_raw_commit committed data*"])


def test_callable_schema_rebuilt_when_the_models_it_imports_change(
        project: pytest.Pytester) -> None:
    project.makepyfile(app_cols=f"COLUMNS = ['id int']  # {project.path}\n", app_schema='''
        from app_cols import COLUMNS

        def create(connection):
            from sqlalchemy import text
            connection.execute(text(f"create table widgets ({', '.join(COLUMNS)})"))
    ''', test_cols='''
        import os
        from sqlalchemy import text

        def test_columns(db):
            names = db.execute(text("select column_name from information_schema.columns "
                                    "where table_name = 'widgets' order by 1")).scalars()
            assert list(names) == os.environ["WANT"].split(",")
    ''')
    project._monkeypatch.setenv("DBTEST_SCHEMA", "callable:app_schema:create")
    project._monkeypatch.setenv("WANT", "id")
    run(project).assert_outcomes(passed=1)
    project.makepyfile(app_cols=f"COLUMNS = ['id int', 'nickname text']  # {project.path}\n")
    project._monkeypatch.setenv("WANT", "id,nickname")
    second = run(project)
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["*template dbtest_tpl_* (callable:app_schema:create): built,*"])
