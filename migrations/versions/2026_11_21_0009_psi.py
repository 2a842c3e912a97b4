"""PSI: key epochs, precomputed artifacts, HTTP-native sessions and chunks, engine jobs;
usage events without a named enterprise (items of a PSI set)

Revision ID: 2026_11_21_0009
Revises: 2026_11_21_0008
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_11_21_0009"
down_revision = "2026_11_21_0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "psi_key_epoch",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key_encrypted", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("retired_at", TS),
    )
    op.create_index(
        "uq_psi_key_epoch_current",
        "psi_key_epoch",
        ["retired_at"],
        unique=True,
        postgresql_where=sa.text("retired_at IS NULL"),
    )
    op.create_table(
        "psi_artifact",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer, sa.ForeignKey("psi_key_epoch.id"), nullable=False),
        sa.Column("slice_key", sa.Text, nullable=False),
        sa.Column("clearance", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("items", sa.BigInteger),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("sha256", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("ready_at", TS),
        sa.UniqueConstraint("product_id", "kind", "epoch", "slice_key", "clearance", name="uq_psi_artifact"),
        sa.CheckConstraint("kind IN ('setup', 'labels', 'engine_cache')", name="ck_psi_artifact_kind"),
        sa.CheckConstraint("state IN ('building', 'ready', 'failed')", name="ck_psi_artifact_state"),
    )
    op.create_table(
        "psi_artifact_chunk",
        sa.Column(
            "artifact_id", sa.BigInteger, sa.ForeignKey("psi_artifact.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "psi_session",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False, index=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("contract_id", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.Integer, sa.ForeignKey("psi_key_epoch.id"), nullable=False),
        sa.Column("slice_key", sa.Text, nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("labeled", sa.Boolean, nullable=False),
        sa.Column("clearance", sa.SmallInteger, nullable=False),
        sa.Column("set_size", sa.Integer, nullable=False),
        sa.Column("items_received", sa.Integer, nullable=False),
        sa.Column("max_chunk_items", sa.Integer, nullable=False),
        sa.Column("charged_fen", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.CheckConstraint("set_size > 0", name="ck_psi_session_set_size"),
        sa.CheckConstraint("items_received <= set_size", name="ck_psi_session_items"),
    )
    op.create_table(
        "psi_chunk",
        sa.Column("session_id", sa.String(64), sa.ForeignKey("psi_session.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("index", sa.Integer, primary_key=True),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("request_sha256", sa.LargeBinary, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "psi_job",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False, index=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("contract_id", sa.BigInteger, nullable=False),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("set_size", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, sa.ForeignKey("psi_key_epoch.id"), nullable=False),
        sa.Column("slice_key", sa.Text, nullable=False),
        sa.Column("cache_id", sa.Text),
        sa.Column("have_cache", sa.Boolean, nullable=False),
        sa.Column("peer_address", sa.Text, nullable=False),
        sa.Column("zone_address", sa.Text, nullable=False),
        sa.Column("ticket_sha256", sa.LargeBinary, nullable=False),
        sa.Column("institution_certificate_pem", sa.Text),
        sa.Column("zone_certificate_pem", sa.Text),
        sa.Column("zone_key_encrypted", sa.LargeBinary),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("charged_fen", sa.BigInteger, nullable=False),
        sa.Column("worker", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'expired')", name="ck_psi_job_status"
        ),
    )
    op.create_index(
        "ix_psi_job_queued", "psi_job", ["created_at"], postgresql_where=sa.text("status = 'queued'")
    )
    op.alter_column("usage_event", "uscc", existing_type=sa.String(18), nullable=True)
    op.add_column("contract", sa.Column("psi_max_set", sa.Integer))
    op.create_check_constraint("ck_contract_psi_max_set", "contract", "psi_max_set IS NULL OR psi_max_set > 0")


def downgrade() -> None:
    op.drop_constraint("ck_contract_psi_max_set", "contract", type_="check")
    op.drop_column("contract", "psi_max_set")
    # units of PSI sets have no enterprise: they go with the tables that explain them
    op.execute("DELETE FROM usage_event WHERE uscc IS NULL")
    op.alter_column("usage_event", "uscc", existing_type=sa.String(18), nullable=False)
    op.drop_index("ix_psi_job_queued", table_name="psi_job")
    op.drop_table("psi_job")
    op.drop_table("psi_chunk")
    op.drop_table("psi_session")
    op.drop_table("psi_artifact_chunk")
    op.drop_table("psi_artifact")
    op.drop_index("uq_psi_key_epoch_current", table_name="psi_key_epoch")
    op.drop_table("psi_key_epoch")
