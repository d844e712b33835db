"""Add the nullable column items.description (the schema of app v2).

A safe expand step for blue-green: the old version never reads the column and inserts without
it, and adding a nullable column without a default is a catalog-only change in PostgreSQL.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "description")
