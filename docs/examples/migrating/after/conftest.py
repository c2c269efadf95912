# ruff: noqa: I001  (legacyapp and factories are first-party in the example project)
# --8<-- [start:conftest]
import os

# legacyapp.db creates its engine at import time; in tests it is never used
os.environ.setdefault("DATABASE_URL", "postgresql+psycopg://unused@localhost/unused")

import pytest
from fastapi.testclient import TestClient

from legacyapp.api import app, get_db
from legacyapp.db import Session


@pytest.fixture(autouse=True)
def app_session(db):
    """Session() in the app's code is this test's `db`."""
    Session.registry.set(db)
    yield db
    Session.registry.clear()


@pytest.fixture
def client(db):
    app.dependency_overrides[get_db] = lambda: db
    yield TestClient(app)
    app.dependency_overrides.pop(get_db, None)
# --8<-- [end:conftest]


# --8<-- [start:sessionmaker]
@pytest.fixture
def sessions_join_the_test(db_connection):
    """SessionLocal() anywhere in the app now joins this test's transaction."""
    from legacyapp.db import SessionLocal, engine

    SessionLocal.configure(bind=db_connection, join_transaction_mode="create_savepoint")
    yield
    SessionLocal.configure(bind=engine, join_transaction_mode="conservative_savepoint")
# --8<-- [end:sessionmaker]
