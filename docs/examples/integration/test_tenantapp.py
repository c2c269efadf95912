# ruff: noqa: I001  (tenantapp and factories are first-party in the example project)
"""The app's tests, unchanged by the move to dbtest."""

import pytest
from sqlalchemy import func, select, text

from factories import AccountFactory
from tenantapp import notes
from tenantapp.db import Session, engine
from tenantapp.models import Account, Note


def test_job_and_web_code_share_the_test_transaction(db):
    AccountFactory(email="a@x.io")
    notes.add_note("a@x.io", "hello")
    assert notes.count_notes() == 1
    assert db.scalar(select(func.count()).select_from(Note)) == 1
    assert Session() is db


def test_nothing_leaked_from_the_previous_test(db):
    assert db.scalar(select(func.count()).select_from(Account)) == 0
    assert notes.count_notes() == 0


def test_tenant_tables_live_in_the_tenant_schema(db):
    assert Note.__table__.schema == "tenant"      # setup hook ran, built or reused
    AccountFactory(email="b@x.io")
    notes.add_note("b@x.io", "in acme")
    in_acme = db.execute(text("SELECT count(*) FROM acme.notes")).scalar()
    assert in_acme == 1


@pytest.fixture(scope="module")
def database_seen_by_a_module_fixture():
    with engine.connect() as conn:
        return conn.scalar(text("SELECT current_database()"))


def test_module_fixtures_see_the_test_database_too(database_seen_by_a_module_fixture, db):
    assert database_seen_by_a_module_fixture == db.scalar(text("SELECT current_database()"))


def test_app_engine_points_at_the_test_database(db):
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT current_database()")) == \
            db.scalar(text("SELECT current_database()"))
        assert conn.dialect.driver == "psycopg2"


def test_driver_setting_reaches_db_and_template(db):
    assert db.get_bind().dialect.driver == "psycopg2"
    comment = db.scalar(text("SELECT obj_description('accounts'::regclass)"))
    assert comment == "built by psycopg2"


def test_expire_on_commit_comes_from_the_app(db):
    assert db.expire_on_commit is False


@pytest.mark.dbtest(isolation="fresh")
def test_global_engine_commits_for_real_in_a_fresh_database(db, fresh_db):
    AccountFactory(email="c@x.io")
    notes.purge_accounts()                        # engine.begin(): a real commit
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT current_database()")) == fresh_db.name
    assert db.scalar(select(func.count()).select_from(Account)) == 0
