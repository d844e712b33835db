"""An expand revision after a pending contract one (phase-order)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "phase_order"
down_revision = "contract_drop"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
