# ruff: noqa: I001  (legacyapp and factories are first-party in the example project)
# --8<-- [start:conftest]
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session as OrmSession

from legacyapp.api import app, get_db
from legacyapp.db import Session, engine     # DATABASE_URL must name a running test server
from legacyapp.models import Base


@pytest.fixture(scope="session", autouse=True)
def schema():
    Base.metadata.drop_all(engine)           # whatever a crashed run left
    Base.metadata.create_all(engine)         # every run, every xdist worker: same database
    yield
    Base.metadata.drop_all(engine)


@pytest.fixture
def db():
    connection = engine.connect()
    transaction = connection.begin()
    session = OrmSession(bind=connection, join_transaction_mode="create_savepoint")
    Session.registry.set(session)            # the scoped session and the factories use it
    yield session
    Session.remove()
    transaction.rollback()
    connection.close()


@pytest.fixture
def client(db):
    app.dependency_overrides[get_db] = lambda: db
    yield TestClient(app)
    app.dependency_overrides.clear()
# --8<-- [end:conftest]
