"""department grants, institution contracts, subject consents

Revision ID: 2026_11_21_0004
Revises: 2026_11_21_0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0004"
down_revision = "2026_11_21_0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "contract",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("purposes", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("products", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("clearance", sa.SmallInteger, nullable=False),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_to", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("max_batch", sa.Integer, nullable=False),
        sa.Column("created_by", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("status_changed_at", TS),
        sa.Column("status_changed_by", sa.BigInteger, sa.ForeignKey("principal.id")),
        sa.Column("status_reason", sa.Text),
        sa.CheckConstraint("status IN ('active', 'suspended', 'terminated')", name="ck_contract_status"),
        sa.CheckConstraint("clearance BETWEEN 1 AND 4", name="ck_contract_clearance"),
        sa.CheckConstraint("valid_to > valid_from", name="ck_contract_period"),
        sa.CheckConstraint("max_batch > 0", name="ck_contract_max_batch"),
    )
    op.create_index("ix_contract_institution_id", "contract", ["institution_id"])

    op.create_table(
        "dataset_grant",
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column("department", sa.String(63), sa.ForeignKey("supplier.id"), nullable=False),
        sa.Column("datasets", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("purposes", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("products", postgresql.ARRAY(sa.Text)),
        sa.Column("institutions", postgresql.ARRAY(sa.BigInteger)),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_to", TS, nullable=False),
        sa.Column("created_by", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", TS),
        sa.Column("revoked_by", sa.BigInteger, sa.ForeignKey("principal.id")),
        sa.Column("revoke_reason", sa.Text),
        sa.CheckConstraint("valid_to > valid_from", name="ck_dataset_grant_period"),
        sa.CheckConstraint("cardinality(datasets) > 0", name="ck_dataset_grant_datasets"),
        sa.CheckConstraint("cardinality(purposes) > 0", name="ck_dataset_grant_purposes"),
    )
    op.create_index("ix_dataset_grant_datasets", "dataset_grant", ["datasets"], postgresql_using="gin")
    op.create_index("ix_dataset_grant_department", "dataset_grant", ["department", "created_at"])

    op.create_table(
        "consent",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("purpose", sa.String(31), nullable=False),
        sa.Column("products", postgresql.ARRAY(sa.Text)),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_to", TS, nullable=False),
        sa.Column("evidence_ref", sa.Text, nullable=False),
        sa.Column("evidence_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", TS),
        sa.Column("revoke_reason", sa.Text),
        sa.CheckConstraint("valid_to > valid_from", name="ck_consent_period"),
        sa.CheckConstraint("evidence_sha256 ~ '^[0-9a-f]{64}$'", name="ck_consent_evidence_sha256"),
    )
    op.create_index("ix_consent_institution_uscc", "consent", ["institution_id", "uscc"])


def downgrade() -> None:
    op.drop_table("consent")
    op.drop_table("dataset_grant")
    op.drop_table("contract")
