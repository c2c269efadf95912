from decimal import Decimal

from sqlalchemy import func, select

from legacyapp.db import Session
from legacyapp.models import Invoice


def bill(customer_id: int, amount: Decimal) -> Invoice:
    """Create an invoice and commit it (through the scoped session)."""
    session = Session()
    invoice = Invoice(customer_id=customer_id, amount=amount)
    session.add(invoice)
    session.commit()
    return invoice


def balance(customer_id: int) -> Decimal:
    total = Session().scalar(select(func.sum(Invoice.amount))
                             .where(Invoice.customer_id == customer_id))
    return total or Decimal("0")


def nightly_cleanup() -> int:
    """Delete zero invoices, on a connection of its own (a job outside any request)."""
    from sqlalchemy import delete

    from legacyapp import db

    with db.engine.begin() as conn:
        return conn.execute(delete(Invoice).where(Invoice.amount == 0)).rowcount
