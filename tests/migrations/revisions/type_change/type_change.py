"""Changes the type of items.name (column-type-change)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "type_change"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("items", "name", type_=sa.String(100), existing_type=sa.Text())


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
