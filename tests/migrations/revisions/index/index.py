"""Indexes the existing table items without CONCURRENTLY (non-concurrent-index)."""

from __future__ import annotations

from alembic import op

revision = "index"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_items_name", "items", ["name"])


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
