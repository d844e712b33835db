"""Adds a NOT NULL column without a default (not-null-without-default)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "not_null"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("sku", sa.Text(), nullable=False))


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
