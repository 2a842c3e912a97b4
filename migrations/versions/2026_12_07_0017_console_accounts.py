"""Console accounts (people acting for a principal) and their sessions

Revision ID: 2026_12_07_0017
Revises: 2026_12_07_0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "2026_12_07_0017"
down_revision = "2026_12_07_0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_account",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "principal_id", sa.BigInteger, sa.ForeignKey("principal.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("login", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("roles", ARRAY(sa.Text), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("totp_sealed", sa.LargeBinary),
        sa.Column("totp_confirmed_at", sa.DateTime(timezone=True)),
        sa.Column("totp_last_step", sa.BigInteger),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_console_account_principal_id", "console_account", ["principal_id"])
    op.create_table(
        "console_session",
        sa.Column("id_sha256", sa.LargeBinary(32), primary_key=True),
        sa.Column(
            "account_id",
            sa.BigInteger,
            sa.ForeignKey("console_account.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("client_address", sa.Text),
        sa.CheckConstraint("stage IN ('password', 'enroll', 'signed-in')", name="ck_console_session_stage"),
    )
    op.create_index("ix_console_session_account_id", "console_session", ["account_id"])


def downgrade() -> None:
    op.drop_table("console_session")
    op.drop_table("console_account")
