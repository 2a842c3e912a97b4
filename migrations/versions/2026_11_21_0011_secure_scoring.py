"""Secure scoring: registered models (encrypted weights only), batch jobs and their chunks,
re-randomization factor pools, the tally per-enterprise caps count; contract.scoring_max_batch

Revision ID: 2026_11_21_0011
Revises: 2026_11_21_0010
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "2026_11_21_0011"
down_revision = "2026_11_21_0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scoring_model",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False, index=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scale", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("features", JSONB, nullable=False),
        sa.Column("registration", JSONB, nullable=False),
        sa.Column("registration_sha256", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(32), nullable=False, index=True),
        sa.Column("key_bits", sa.Integer, nullable=False),
        sa.Column("score_bits", sa.Integer, nullable=False),
        sa.Column("slot_bits", sa.Integer, nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("resolution", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("reviewed_at", TS),
        sa.Column("reviewed_by", sa.BigInteger, sa.ForeignKey("principal.id")),
        sa.Column("review_reason", sa.Text),
        sa.Column("retired_at", TS),
        sa.Column("retired_by", sa.BigInteger, sa.ForeignKey("principal.id")),
        sa.Column("retire_reason", sa.Text),
        sa.CheckConstraint(
            "state IN ('pending_review', 'approved', 'rejected', 'retired')", name="ck_scoring_model_state"
        ),
        sa.CheckConstraint("kind IN ('logistic', 'scorecard')", name="ck_scoring_model_kind"),
    )
    op.create_index(
        "uq_scoring_model_live_name",
        "scoring_model",
        ["institution_id", "name"],
        unique=True,
        postgresql_where=sa.text("state IN ('pending_review', 'approved')"),
    )
    op.create_table(
        "scoring_factor",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("key_fingerprint", sa.String(32), nullable=False, index=True),
        sa.Column("factor_sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "scoring_job",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False, index=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("model_id", sa.String(40), sa.ForeignKey("scoring_model.id"), nullable=False, index=True),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("contract_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("found", sa.Integer, nullable=False),
        sa.Column("chunk_size", sa.Integer, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("chunks_done", sa.Integer, nullable=False),
        sa.Column("charged_fen", sa.BigInteger, nullable=False),
        sa.Column("worker", sa.Text),
        sa.Column("heartbeat_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name="ck_scoring_job_status"
        ),
        sa.CheckConstraint("chunks_done <= chunks", name="ck_scoring_job_progress"),
    )
    op.create_index(
        "ix_scoring_job_open",
        "scoring_job",
        ["created_at"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_table(
        "scoring_job_item",
        sa.Column(
            "job_id", sa.String(40), sa.ForeignKey("scoring_job.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("found", sa.Boolean, nullable=False),
    )
    op.create_table(
        "scoring_chunk",
        sa.Column(
            "job_id", sa.String(40), sa.ForeignKey("scoring_job.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("index", sa.Integer, primary_key=True),
        sa.Column("found", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("fresh_factors", sa.Integer, nullable=False),
        sa.Column("worker", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "scoring_tally",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("model_id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(40)),
    )
    op.create_index("ix_scoring_tally_cap", "scoring_tally", ["institution_id", "product_id", "uscc", "at"])
    op.add_column("contract", sa.Column("scoring_max_batch", sa.Integer))
    op.create_check_constraint(
        "ck_contract_scoring_max_batch", "contract", "scoring_max_batch IS NULL OR scoring_max_batch > 0"
    )


def downgrade() -> None:
    op.drop_constraint("ck_contract_scoring_max_batch", "contract", type_="check")
    op.drop_column("contract", "scoring_max_batch")
    op.drop_index("ix_scoring_tally_cap", table_name="scoring_tally")
    op.drop_table("scoring_tally")
    op.drop_table("scoring_chunk")
    op.drop_table("scoring_job_item")
    op.drop_index("ix_scoring_job_open", table_name="scoring_job")
    op.drop_table("scoring_job")
    op.drop_table("scoring_factor")
    op.drop_index("uq_scoring_model_live_name", table_name="scoring_model")
    op.drop_table("scoring_model")
