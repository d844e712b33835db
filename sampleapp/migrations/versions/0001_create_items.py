"""Create the items table with three rows (the schema of app v1).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    items = op.create_table(
        "items",
        sa.Column("id", sa.Integer(), primary_key=True),  # SERIAL: an integer primary key
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    op.bulk_insert(items, [{"name": "anvil"}, {"name": "bell"}, {"name": "crank"}])


def downgrade() -> None:
    op.drop_table("items")
