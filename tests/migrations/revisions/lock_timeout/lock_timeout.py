"""Switches the lock_timeout off, then alters items (lock-timeout)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "lock_timeout"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = 0")
    op.add_column("items", sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
