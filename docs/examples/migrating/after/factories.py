# ruff: noqa: I001  (legacyapp and factories are first-party in the example project)
# --8<-- [start:factories]
import factory
from factory.alchemy import SQLAlchemyModelFactory

from legacyapp.models import Customer, Invoice


class CustomerFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Customer                           # no sqlalchemy_session: dbtest binds it
        sqlalchemy_session_persistence = "flush"

    name = factory.Sequence(lambda n: f"customer {n}")


class InvoiceFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Invoice
        sqlalchemy_session_persistence = "flush"

    customer = factory.SubFactory(CustomerFactory)
    amount = 100
# --8<-- [end:factories]
