"""foundation: suppliers, datasets and versions, ingest runs and rejects, principals and keys

Revision ID: 2026_11_21_0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS zone")
    op.create_table(
        "supplier",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_en", sa.Text, nullable=False, server_default=""),
        sa.Column("kind", sa.String(16), nullable=False, server_default="department"),
        sa.Column("admission_status", sa.String(16), nullable=False, server_default="admitted"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('department', 'other')", name="ck_supplier_kind"),
    )
    op.create_table(
        "dataset",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("supplier_id", sa.String(63), sa.ForeignKey("supplier.id"), nullable=False, index=True),
        sa.Column("spec", postgresql.JSONB, nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("current_version", sa.Integer),
        sa.Column("current_rows", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "dataset_version",
        sa.Column(
            "dataset_id", sa.String(63), sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("rows_total", sa.BigInteger, nullable=False),
        sa.Column("rows_loaded", sa.BigInteger, nullable=False),
        sa.Column("rows_deleted", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "ingest_run",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "dataset_id", sa.String(63), sa.ForeignKey("dataset.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("status", sa.String(16), nullable=False, server_default="new"),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False, server_default=""),
        sa.Column("scheduled_for", TS),
        sa.Column("source_override", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", TS),
        sa.Column("heartbeat_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("worker", sa.Text),
        sa.Column("backend_pid", sa.Integer),
        sa.Column("source", sa.Text),
        sa.Column("source_sha256", sa.String(64)),
        sa.Column("encoding", sa.String(16)),
        sa.Column("version", sa.Integer),
        sa.Column("rows_read", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_loaded", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_unchanged", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_deleted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_rejected", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error_code", sa.String(32)),
        sa.Column("error", sa.Text),
        sa.Column("note", sa.Text),
        sa.UniqueConstraint("dataset_id", "scheduled_for", name="uq_ingest_run_scheduled"),
        sa.CheckConstraint(
            "status IN ('new', 'running', 'succeeded', 'failed', 'aborted')", name="ck_ingest_run_status"
        ),
    )
    op.create_index("ix_ingest_run_dataset_created", "ingest_run", ["dataset_id", "created_at"])
    op.create_index(
        "ix_ingest_run_open",
        "ingest_run",
        ["status"],
        postgresql_where=sa.text("status IN ('new', 'running')"),
    )
    op.create_table(
        "ingest_reject",
        sa.Column(
            "run_id", sa.BigInteger, sa.ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("line", sa.BigInteger),
        sa.Column("column", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("value", sa.Text),
    )
    op.create_table(
        "principal",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("roles", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("supplier_id", sa.String(63), sa.ForeignKey("supplier.id")),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('operator', 'department', 'institution')", name="ck_principal_kind"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(24), primary_key=True),
        sa.Column(
            "principal_id", sa.BigInteger, sa.ForeignKey("principal.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("secret_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", TS),
    )
    op.create_index("ix_api_key_principal_id", "api_key", ["principal_id"])


def downgrade() -> None:
    op.drop_table("api_key")
    op.drop_table("principal")
    op.drop_table("ingest_reject")
    op.drop_index("ix_ingest_run_open", table_name="ingest_run")
    op.drop_index("ix_ingest_run_dataset_created", table_name="ingest_run")
    op.drop_table("ingest_run")
    op.drop_table("dataset_version")
    op.drop_table("dataset")
    op.drop_table("supplier")
    # zone tables hold departments' data: dropped with the schema only when empty of tables
    op.execute("DROP SCHEMA IF EXISTS zone RESTRICT")
