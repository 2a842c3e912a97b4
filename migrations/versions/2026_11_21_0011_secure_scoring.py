"""Secure scoring: registered models (encrypted weights only), batch jobs and their chunks,
re-randomization factor pools; contract.scoring_max_batch

Revision ID: 2026_11_21_0011
Revises: 2026_11_21_0010
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "2026_11_21_0011"
down_revision = "2026_11_21_0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
