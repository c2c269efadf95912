"""The suite of legacyapp: the same file runs with the old conftest and with dbtest."""

from decimal import Decimal

from factories import CustomerFactory, InvoiceFactory
from legacyapp.billing import balance, bill
from legacyapp.models import Customer


def test_bill_adds_to_the_balance(db):
    customer = CustomerFactory()
    bill(customer.id, Decimal("12.50"))           # commits through the scoped session
    InvoiceFactory(customer=customer, amount=Decimal("7.50"))
    assert balance(customer.id) == Decimal("20.00")


def test_api(client):
    created = client.post("/customers", params={"name": "ACME"})
    assert created.status_code == 201
    total = client.get(f"/customers/{created.json()['id']}/total")
    assert total.json() == {"total": "0"}


def test_every_test_starts_empty(db):
    assert db.query(Customer).count() == 0
