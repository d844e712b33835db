"""Drops items.name as a contract revision: it runs after the switch."""

from __future__ import annotations

from alembic import op

revision = "contract_drop"
down_revision = "0002"
branch_labels = None
depends_on = None

# Runs only after the switch is verified and the old version is gone.
phase = "contract"


def upgrade() -> None:
    op.drop_column("items", "name")


def downgrade() -> None:
    raise NotImplementedError("a test fixture: never run against a database")
