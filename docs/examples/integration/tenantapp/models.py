from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Account(Base):
    """A shared table (schema public)."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


class Note(Base):
    """A tenant table: configure() moves it to the "tenant" schema, which the app's
    schema_translate_map sends to the tenant's own schema."""

    __tablename__ = "notes"
    __table_args__ = {"info": {"tenant": True}}  # noqa: RUF012
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey(Account.id))
    body: Mapped[str]
