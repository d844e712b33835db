"""Renames items.name (rename-column)."""

from __future__ import annotations

from alembic import op

revision = "rename_column"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("items", "name", new_column_name="title")


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
