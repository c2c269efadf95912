"""Leak detection as a user meets it: every boundary checked, DDL caught, the right test
blamed (pytester projects run in a subprocess, on real PostgreSQL)."""

from __future__ import annotations

import pytest

from tests._projects import ITEM_MODELS, metadata_project, run

pytest_plugins = ["pytester"]

MODELS = ITEM_MODELS


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return metadata_project(pytester)


COUNT = "select count(*) from items"


def test_commit_through_db_engine_alone_is_blamed_on_that_test(
        project: pytest.Pytester) -> None:
    project.makepyfile(test_engine='''
        from sqlalchemy import text

        def test_one(db_engine):             # no db fixture: checked by the plugin's hooks
            with db_engine.begin() as c:
                c.execute(text("insert into items (name) values ('leaked')"))

        def test_two(db):
            assert db.execute(text("''' + COUNT + '''")).scalar() == 0
    ''')
    result = run(project)
    result.assert_outcomes(passed=2, errors=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_one*",
                                 "*LeakError: test_engine.py::test_one committed data outside "
                                 "its savepoint*rows in public.items*"])
    assert "ERROR at setup of test_two" not in out and "test_two committed" not in out


def test_commit_by_a_test_without_fixtures_is_found_at_the_next_start(
        project: pytest.Pytester) -> None:
    project.makepyfile(test_sneaky='''
        from sqlalchemy import text
        ENGINES = []

        def test_first(db_engine):
            ENGINES.append(db_engine)        # e.g. the app's global engine

        def test_sneaky():                   # no dbtest fixture at all
            with ENGINES[0].begin() as c:
                c.execute(text("insert into items (name) values ('leaked')"))

        def test_innocent():
            pass

        def test_next(db):
            assert db.execute(text("''' + COUNT + '''")).scalar() == 0

        def test_after(db):
            assert db.execute(text("''' + COUNT + '''")).scalar() == 0
    ''')
    result = run(project)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_next*",
        "*LeakError: data committed outside a savepoint was found when test_sneaky.py::"
        "test_next started (not by test_sneaky.py::test_next*rows in public.items; committed "
        "by one of the 3 tests since the last clean check: test_sneaky.py::test_first (in its "
        "fixtures' teardown, after its own check), test_sneaky.py::test_sneaky, "
        "test_sneaky.py::test_innocent*"])


def test_ddl_and_rows_in_a_table_created_at_run_time_are_caught(
        project: pytest.Pytester) -> None:
    project.makepyfile(test_ddl='''
        from sqlalchemy import text

        def test_tenant(db, db_engine):
            with db_engine.begin() as c:     # the app creates a tenant schema at run time
                c.execute(text("create schema tenant_a"))
                c.execute(text("create table tenant_a.notes (id int)"))
                c.execute(text("insert into tenant_a.notes values (1)"))

        def test_clean_again(db):
            assert db.execute(text("select to_regnamespace('tenant_a')")).scalar() is None

        def test_drop_table(db_engine):
            with db_engine.begin() as c:
                c.execute(text("drop table items"))

        def test_items_are_back(db):
            assert db.execute(text("''' + COUNT + '''")).scalar() == 0

        def test_own_ddl_is_rolled_back_not_a_leak(db):
            db.execute(text("create table scratch (id int)"))
            db.execute(text("insert into scratch values (1)"))
            db.commit()
    ''')
    result = run(project)
    result.assert_outcomes(passed=5, errors=2)
    result.stdout.fnmatch_lines([
        "*LeakError: test_ddl.py::test_tenant committed data outside its savepoint*rows in "
        "tenant_a.notes and schema changes (CREATE SCHEMA tenant_a; CREATE TABLE "
        "tenant_a.notes)*",
        "*LeakError: test_ddl.py::test_drop_table committed data*schema changes (DROP TABLE "
        "public.items)*"])


def test_rows_committed_into_a_table_created_after_the_clone_in_warn_mode(
        project: pytest.Pytester) -> None:
    project.makepyfile(test_later='''
        from sqlalchemy import text

        def test_creates(db_engine):
            with db_engine.begin() as c:
                c.execute(text("create table later (id int)"))

        def test_writes_later(db_engine):
            with db_engine.begin() as c:
                c.execute(text("create table if not exists later (id int)"))
            with db_engine.begin() as c:
                c.execute(text("insert into later values (1)"))
    ''')
    result = run(project, "--dbtest-leaks=warn", "-W", "default")
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(["*test_creates committed data*CREATE TABLE public.later*",
                                 "*test_writes_later committed data*rows in public.later*"])


def test_async_leak_is_blamed_on_the_async_test(project: pytest.Pytester) -> None:
    project.makepyfile(test_async='''
        from sqlalchemy import text

        async def test_leaks(async_db, db_engine):
            with db_engine.begin() as c:
                c.execute(text("insert into items (name) values ('leaked')"))

        async def test_next(async_db):
            assert (await async_db.execute(text("''' + COUNT + '''"))).scalar() == 0
    ''')
    result = run(project)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*",
                                 "*LeakError: test_async.py::test_leaks committed data*"
                                 "public.items*"])


def test_dropping_the_leak_record_is_a_leak(project: pytest.Pytester) -> None:
    project.makepyfile(test_record='''
        from sqlalchemy import text

        def test_drops(db_engine):
            with db_engine.begin() as c:
                c.execute(text("drop schema dbtest_internal cascade"))

        def test_next(db):
            assert db.execute(text("select to_regclass('dbtest_internal.touched')")).scalar()
    ''')
    result = run(project)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_drops committed data*DROP SCHEMA dbtest_internal*"])


def test_async_test_checks_at_its_start_too(project: pytest.Pytester) -> None:
    project.makepyfile(test_async_start='''
        from sqlalchemy import text
        ENGINES = []

        def test_first(db_engine):
            ENGINES.append(db_engine)

        def test_sneaky():
            with ENGINES[0].begin() as c:
                c.execute(text("insert into items (name) values ('leaked')"))

        async def test_next(async_db):
            pass

        async def test_after(async_db):
            assert (await async_db.execute(text("''' + COUNT + '''"))).scalar() == 0
    ''')
    result = run(project)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_next*",
                                 "*LeakError: data committed outside a savepoint was found "
                                 "when test_async_start.py::test_next started*"
                                 "test_async_start.py::test_sneaky*"])
