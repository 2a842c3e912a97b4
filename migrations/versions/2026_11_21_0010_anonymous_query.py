"""Anonymous query: sealed bucket tables per product, key epoch and data versions

Revision ID: 2026_11_21_0010
Revises: 2026_11_21_0009
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "2026_11_21_0010"
down_revision = "2026_11_21_0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "anonymous_table",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("sealed_sha256", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer, sa.ForeignKey("psi_key_epoch.id"), nullable=False),
        sa.Column("data_key", sa.Text, nullable=False),
        sa.Column("data_versions", JSONB, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("answer", sa.String(16), nullable=False),
        sa.Column("k", sa.Integer, nullable=False),
        sa.Column("prefix_bits", sa.SmallInteger),
        sa.Column("clearance", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("candidates", sa.BigInteger),
        sa.Column("members", sa.BigInteger),
        sa.Column("smallest_bucket", sa.BigInteger),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("error", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("ready_at", TS),
        sa.Column("superseded_at", TS),
        sa.UniqueConstraint("product_id", "sealed_sha256", "epoch", "data_key", name="uq_anonymous_table"),
        sa.CheckConstraint("answer IN ('existence', 'full')", name="ck_anonymous_table_answer"),
        sa.CheckConstraint("state IN ('building', 'ready', 'failed')", name="ck_anonymous_table_state"),
        sa.CheckConstraint("prefix_bits IS NULL OR prefix_bits BETWEEN 0 AND 24", name="ck_anonymous_table_bits"),
        sa.CheckConstraint(
            "state <> 'ready' OR (prefix_bits IS NOT NULL AND smallest_bucket >= k)",
            name="ck_anonymous_table_k",
        ),
    )
    op.create_index("ix_anonymous_table_product", "anonymous_table", ["product_id", "state"])
    op.create_table(
        "anonymous_bucket",
        sa.Column(
            "table_id", sa.BigInteger, sa.ForeignKey("anonymous_table.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("candidates", sa.Integer, nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("anonymous_bucket")
    op.drop_index("ix_anonymous_table_product", table_name="anonymous_table")
    op.drop_table("anonymous_table")
