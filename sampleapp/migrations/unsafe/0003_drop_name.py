"""Drop the column items.name.

Deliberately UNSAFE for blue-green, kept as the bad example for Bascule's migration checks:
during a deploy the old and the new version share this schema, and the running version still
selects `name`, so its /api/items fails from the moment this commits. It also destroys data; the
downgrade brings the column back empty. Only present when BASCULE_UNSAFE_MIGRATIONS=1 (env.py)
or with the [unsafe] section of alembic.ini.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("items", "name")


def downgrade() -> None:
    op.add_column("items", sa.Column("name", sa.Text(), nullable=True))
