from sqlalchemy import func, select

from tenantapp.db import Session, SessionLocal, engine
from tenantapp.models import Account, Note


def add_note(email: str, body: str) -> Note:
    """Job code on the scoped session: commits."""
    account = Session.scalars(select(Account).where(Account.email == email)).one()
    note = Note(account_id=account.id, body=body)
    Session.add(note)
    Session.commit()
    return note


def count_notes() -> int:
    """Web code: a session of its own from the sessionmaker."""
    with SessionLocal() as session:
        return session.scalar(select(func.count()).select_from(Note)) or 0


def purge_accounts() -> None:
    """Maintenance code on the global engine: commits on its own connection."""
    with engine.begin() as conn:
        conn.execute(Account.__table__.delete())
