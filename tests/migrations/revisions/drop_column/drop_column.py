"""Drops items.name while the old version reads it (drop-column)."""

from __future__ import annotations

from alembic import op

revision = "drop_column"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("items", "name")


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
