from collections.abc import Iterator
from decimal import Decimal

from fastapi import Depends, FastAPI
from sqlalchemy.orm import Session

from legacyapp.db import SessionLocal
from legacyapp.models import Customer

app = FastAPI()


def get_db() -> Iterator[Session]:
    with SessionLocal() as session:
        yield session


@app.post("/customers", status_code=201)
def create_customer(name: str, db: Session = Depends(get_db)) -> dict[str, int]:
    customer = Customer(name=name)
    db.add(customer)
    db.commit()
    return {"id": customer.id}


@app.get("/customers/{customer_id}/total")
def total(customer_id: int, db: Session = Depends(get_db)) -> dict[str, str]:
    customer = db.get(Customer, customer_id)
    amounts = [i.amount for i in customer.invoices] if customer else []
    return {"total": str(sum(amounts, Decimal("0")))}
