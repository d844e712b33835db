"""Adds a nullable column and fills it on every row at once (data-change-without-where)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "backfill"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("slug", sa.Text(), nullable=True))
    op.execute("UPDATE items SET slug = lower(name)")


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
