"""principals can be suspended (an institution's clients and tokens with it)

Revision ID: 2026_11_21_0006
Revises: 2026_11_21_0005
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_11_21_0006"
down_revision = "2026_11_21_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("principal", sa.Column("suspended_at", sa.DateTime(timezone=True)))
    op.add_column("principal", sa.Column("suspend_reason", sa.Text))


def downgrade() -> None:
    op.drop_column("principal", "suspend_reason")
    op.drop_column("principal", "suspended_at")
