"""Indexes items concurrently, outside the revision's transaction: safe."""

from __future__ import annotations

from alembic import op

revision = "safe_index"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_items_name", "items", ["name"], postgresql_concurrently=True)


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
