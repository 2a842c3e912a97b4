"""metering and billing: plans, meters, usage events, idempotent responses, ledger

Revision ID: 2026_11_21_0008
Revises: 2026_11_21_0007
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0008"
down_revision = "2026_11_21_0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
