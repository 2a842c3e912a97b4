"""audit trail (entries and sealed blocks) and lifecycle transitions

Revision ID: 2026_11_21_0002
Revises: 2026_11_21_0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0002"
down_revision = "2026_11_21_0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_entry",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False, server_default=sa.text("clock_timestamp()")),
        sa.Column("actor_id", sa.BigInteger),
        sa.Column("actor_name", sa.Text, nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(63), nullable=False, index=True),
        sa.Column("object_type", sa.String(31), nullable=False),
        sa.Column("object_id", sa.Text, nullable=False),
        sa.Column("purpose", sa.String(31)),
        sa.Column("entity_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("entities", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("detail", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("supplier_ids", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("institution_id", sa.BigInteger),
        sa.Column("block_height", sa.Integer),
        sa.Column("block_position", sa.Integer),
        sa.CheckConstraint("outcome IN ('ok', 'refused', 'failed')", name="ck_audit_entry_outcome"),
    )
    op.create_index(
        "ix_audit_entry_unsealed", "audit_entry", ["id"], postgresql_where=sa.text("block_height IS NULL")
    )
    op.create_index("ix_audit_entry_block", "audit_entry", ["block_height", "block_position"])
    op.create_index("ix_audit_entry_suppliers", "audit_entry", ["supplier_ids"], postgresql_using="gin")
    op.create_index("ix_audit_entry_institution", "audit_entry", ["institution_id", "id"])
    op.create_table(
        "audit_block",
        sa.Column("height", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("merkle_root", sa.LargeBinary(32), nullable=False),
        sa.Column("entry_count", sa.Integer, nullable=False),
        sa.Column("first_entry_id", sa.BigInteger, nullable=False),
        sa.Column("last_entry_id", sa.BigInteger, nullable=False),
        sa.Column("sealed_at", TS, nullable=False),
        sa.Column("block_hash", sa.LargeBinary(32), nullable=False, unique=True),
    )
    op.create_table(
        "lifecycle_transition",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("subject_type", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.Text, nullable=False),
        sa.Column("from_state", sa.String(31)),
        sa.Column("to_state", sa.String(31), nullable=False),
        sa.Column("by_id", sa.BigInteger),
        sa.Column("by_name", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", TS, nullable=False, server_default=sa.text("clock_timestamp()")),
    )
    op.create_index(
        "ix_lifecycle_transition_subject", "lifecycle_transition", ["subject_type", "subject_id", "id"]
    )


def downgrade() -> None:
    op.drop_table("lifecycle_transition")
    op.drop_table("audit_block")
    op.drop_table("audit_entry")
