# ruff: noqa: I001  (legacyapp and factories are first-party in the example project)
"""Tests that only the dbtest version can have: a real commit, and the app's own engine."""

from decimal import Decimal

import pytest
from sqlalchemy import func, select

import legacyapp.db
from factories import InvoiceFactory
from legacyapp.billing import nightly_cleanup
from legacyapp.db import SessionLocal
from legacyapp.models import Customer, Invoice


# --8<-- [start:sessionmaker-test]
def test_code_that_opens_its_own_session(db, sessions_join_the_test):
    with SessionLocal() as session:          # what a background job does
        session.add(Invoice(customer=Customer(name="job"), amount=Decimal("5")))
        session.commit()
    assert db.scalar(select(func.count()).select_from(Invoice)) == 1
# --8<-- [end:sessionmaker-test]


# --8<-- [start:engine]
@pytest.mark.dbtest(isolation="fresh")
def test_job_on_the_global_engine(db, fresh_db, monkeypatch):
    monkeypatch.setattr(legacyapp.db, "engine", fresh_db.engine)
    InvoiceFactory(amount=0)
    InvoiceFactory(amount=5)
    db.commit()                              # a real commit: the job's connection sees it
    assert nightly_cleanup() == 1
    assert db.scalar(select(func.count()).select_from(Invoice)) == 1
# --8<-- [end:engine]
