# ruff: noqa: I001  (legacyapp and factories are first-party in the example project)
# --8<-- [start:factories]
import factory
from factory.alchemy import SQLAlchemyModelFactory

from legacyapp.db import Session
from legacyapp.models import Customer, Invoice


class CustomerFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Customer
        sqlalchemy_session = Session               # the app's scoped session
        sqlalchemy_session_persistence = "commit"

    name = factory.Sequence(lambda n: f"customer {n}")


class InvoiceFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Invoice
        sqlalchemy_session = Session
        sqlalchemy_session_persistence = "commit"

    customer = factory.SubFactory(CustomerFactory)
    amount = 100
# --8<-- [end:factories]
