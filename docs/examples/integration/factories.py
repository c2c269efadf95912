# ruff: noqa: I001  (tenantapp and factories are first-party in the example project)
import factory

from tenantapp.db import Session
from tenantapp.models import Account


class AccountFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = Account
        sqlalchemy_session = Session              # the app's scoped session
        sqlalchemy_session_persistence = "commit"

    email = factory.Sequence(lambda n: f"user{n}@example.com")
