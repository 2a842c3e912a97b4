"""Engine PSI jobs and scoring jobs remember the call that charged them and the credit that
gave it back when they failed on the zone's side

Revision ID: 2026_12_07_0014
Revises: 2026_12_07_0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_12_07_0014"
down_revision = "2026_12_07_0013"
branch_labels = None
depends_on = None

TABLES = ("psi_job", "scoring_job")


def upgrade() -> None:
    for table in TABLES:
        # the call's usage events and ledger debit carry this id (metering.call_charges)
        op.add_column(table, sa.Column("call_id", postgresql.UUID(as_uuid=True), nullable=True))
        # the zone's automatic credit, once: set in the transaction that posts it
        op.add_column(
            table,
            sa.Column("credit_id", sa.BigInteger, sa.ForeignKey("ledger_entry.id", name=f"fk_{table}_credit"), nullable=True),
        )


def downgrade() -> None:
    for table in TABLES:
        op.drop_constraint(f"fk_{table}_credit", table, type_="foreignkey")
        op.drop_column(table, "credit_id")
        op.drop_column(table, "call_id")
