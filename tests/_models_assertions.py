"""Support for the assertion tests: a throwaway schema with deliberate mistakes, and a small
blog on the example schema.

The throwaway models have a Base of their own. Tests use them as a schema source with
``@pytest.mark.dbtest(schema="metadata:tests._models_assertions:Base")``: dbtest imports
``tests._models_assertions`` with the project root on ``sys.path`` (pytest's
``pythonpath = ["."]`` and the schema loader both put it there). ``tests/`` has no
``__init__.py``, so ``tests`` is a namespace package, and the test modules import this one
under the same name, which keeps one copy of the mappers in the process.

Deliberate mistakes, each found by ``audit_foreign_keys``:

* ``AuditAuthor.books``: the database deletes an author's books (``ON DELETE CASCADE``),
  but the relationship has the default cascade, so the ORM sets ``author_id`` NULL instead
  and the books survive as orphans (``cascade_mismatch``);
* ``AuditBook.reviews``: the ORM deletes the reviews although the database would keep them
  with ``book_id`` NULL (``cascade_mismatch``), and ``book_id`` has no index
  (``missing_index``);
* ``audit_stickers.book_id``: ``ON DELETE SET NULL`` on a ``NOT NULL`` column
  (``set_null_not_nullable``).

``AuditBook.notes`` is done right, for contrast.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from migrations_example.models import Comment, Order, OrderItem, Post, Product, User

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class Base(DeclarativeBase):
    pass


class AuditAuthor(Base):
    __tablename__ = "audit_authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))

    # MISTAKE: default cascade against ON DELETE CASCADE
    books: Mapped[list[AuditBook]] = relationship(back_populates="author")


class AuditBook(Base):
    __tablename__ = "audit_books"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("audit_authors.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(50))

    author: Mapped[AuditAuthor | None] = relationship(back_populates="books")
    # MISTAKE: the ORM deletes what ON DELETE SET NULL keeps
    reviews: Mapped[list[AuditReview]] = relationship(cascade="all, delete-orphan")
    notes: Mapped[list[AuditNote]] = relationship(cascade="all, delete-orphan",
                                                  passive_deletes=True)


class AuditReview(Base):
    __tablename__ = "audit_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    # MISTAKE: no index on the foreign key
    book_id: Mapped[int | None] = mapped_column(ForeignKey("audit_books.id", ondelete="SET NULL"))


class AuditNote(Base):
    __tablename__ = "audit_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(ForeignKey("audit_books.id", ondelete="CASCADE"),
                                         index=True)


class AuditSticker(Base):
    __tablename__ = "audit_stickers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # MISTAKE: SET NULL on a NOT NULL column
    book_id: Mapped[int] = mapped_column(ForeignKey("audit_books.id", ondelete="SET NULL"),
                                         index=True)


@dataclass
class Blog:
    """alice wrote post 1 (commented by bob and by alice) and has one order;
    bob wrote post 2 (commented by alice) and has none; carol has nothing."""

    alice: User
    bob: User
    carol: User
    alice_post: Post
    bob_post: Post
    product: Product
    order: Order


def make_blog(db: Session) -> Blog:
    """Create the :class:`Blog` rows through ``db`` and flush them."""
    alice = User(email="alice@example.com", username="alice", password_hash="x")
    bob = User(email="bob@example.com", username="bob", password_hash="x")
    carol = User(email="carol@example.com", username="carol", password_hash="x")
    p1 = Post(author=alice, title="Hello", body="first")
    p2 = Post(author=bob, title="Reply", body="second")
    product = Product(sku="SKU-1", name="pen", price=Decimal("2.50"), stock=10)
    order = Order(user=alice, status="paid")
    db.add_all([alice, bob, carol, p1, p2, product, order,
                Comment(post=p1, author=bob, body="nice"),
                Comment(post=p1, author=alice, body="thanks"),
                Comment(post=p2, author=alice, body="agreed"),
                OrderItem(order=order, product=product, quantity=2, unit_price=Decimal("2.50"))])
    db.flush()
    return Blog(alice, bob, carol, p1, p2, product, order)
