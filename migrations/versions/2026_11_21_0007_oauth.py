"""OAuth2: clients, signing keys, revoked tokens, used client assertions

Revision ID: 2026_11_21_0007
Revises: 2026_11_21_0006
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0007"
down_revision = "2026_11_21_0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
