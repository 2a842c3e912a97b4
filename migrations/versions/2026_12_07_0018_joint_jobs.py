"""Joint statistics and modeling jobs, their encrypted columns and their samples' digests

Revision ID: 2026_12_07_0018
Revises: 2026_12_07_0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "2026_12_07_0018"
down_revision = "2026_12_07_0017"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "joint_job",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("contract_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("features", ARRAY(sa.Text), nullable=False),
        sa.Column("params", JSONB, nullable=False),
        sa.Column("sample_size", sa.Integer, nullable=False),
        sa.Column("sample", ARRAY(sa.String(18)), nullable=False),
        sa.Column("public_key", sa.LargeBinary),
        sa.Column("result", JSONB),
        sa.Column("peer_address", sa.Text),
        sa.Column("zone_address", sa.Text),
        sa.Column("ticket_sha256", sa.LargeBinary),
        sa.Column("institution_certificate_pem", sa.Text),
        sa.Column("zone_certificate_pem", sa.Text),
        sa.Column("zone_key_encrypted", sa.LargeBinary),
        sa.Column("progress_phase", sa.Text),
        sa.Column("progress_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("features_worker", sa.Text),
        sa.Column("zone_features", sa.LargeBinary),
        sa.Column("report", JSONB),
        sa.Column("charged_fen", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("call_id", UUID(as_uuid=True)),
        sa.Column("credit_id", sa.BigInteger, sa.ForeignKey("ledger_entry.id")),
        sa.Column("worker", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.CheckConstraint("kind IN ('stats', 'train')", name="ck_joint_job_kind"),
        sa.CheckConstraint(
            "status IN ('receiving', 'queued', 'running', 'succeeded', 'failed', 'expired')",
            name="ck_joint_job_status",
        ),
    )
    op.create_index(
        "ix_joint_job_queued", "joint_job", ["created_at"], postgresql_where=sa.text("status = 'queued'")
    )
    op.create_index("ix_joint_job_institution", "joint_job", ["institution_id", "created_at"])
    op.create_table(
        "joint_column",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("joint_job.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "joint_sample_member",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("joint_job.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("member", sa.LargeBinary, primary_key=True),
    )
    op.create_index("ix_joint_sample_member", "joint_sample_member", ["member"])


def downgrade() -> None:
    op.drop_index("ix_joint_sample_member", table_name="joint_sample_member")
    op.drop_table("joint_sample_member")
    op.drop_table("joint_column")
    op.drop_index("ix_joint_job_institution", table_name="joint_job")
    op.drop_index("ix_joint_job_queued", table_name="joint_job")
    op.drop_table("joint_job")
