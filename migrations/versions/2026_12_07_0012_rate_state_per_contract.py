"""Rate-limit state per contract: each contract's plan limits that contract's calls with a state of
its own (one call under a slow private plan no longer throttles the institution's other contracts).

Revision ID: 2026_12_07_0012
Revises: 2026_11_21_0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0012"
down_revision = "2026_11_21_0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_rate",
        sa.Column("contract_id", sa.BigInteger, sa.ForeignKey("contract.id", ondelete="CASCADE"), primary_key=True),
        # GCRA: the theoretical arrival time of the contract's next call
        sa.Column("tat", sa.DateTime(timezone=True), nullable=True),
    )
    op.drop_column("meter", "tat")


def downgrade() -> None:
    op.add_column("meter", sa.Column("tat", sa.DateTime(timezone=True), nullable=True))
    op.drop_table("meter_rate")
