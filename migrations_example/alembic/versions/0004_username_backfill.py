"""users.username, filled from the email local part (data migration)

The usual three steps for a new NOT NULL column on a table that already has rows: add it
nullable, fill it with an UPDATE, then set NOT NULL. The downgrade drops the column; the values
are derived, so nothing is lost.

Revision ID: 0004_username_backfill
Revises: 0003_tags
Create Date: 2024-01-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_username_backfill"
down_revision: str | Sequence[str] | None = "0003_tags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("username", sa.String(length=64), nullable=True))
    # Plain SQL rather than the ORM models: a migration must keep working after models.py
    # moves on. split_part also works in offline (--sql) mode.
    op.execute(sa.text("UPDATE users SET username = left(split_part(email, '@', 1), 64)"))
    op.alter_column("users", "username", existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    op.drop_column("users", "username")
