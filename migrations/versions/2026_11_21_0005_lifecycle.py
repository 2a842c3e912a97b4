"""lifecycle: demand requests, admission reviews, quality evaluations, product ratings, supplier blacklist

Revision ID: 2026_11_21_0005
Revises: 2026_11_21_0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0005"
down_revision = "2026_11_21_0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # suppliers: admission status is checked, and the documents admission was decided on
    op.add_column("supplier", sa.Column("attachments", postgresql.JSONB, nullable=False, server_default="[]"))
    op.create_check_constraint(
        "ck_supplier_admission_status",
        "supplier",
        "admission_status IN ('applied', 'admitted', 'rejected', 'blacklisted')",
    )
    # datasets: new ones start in intake; those already serving were admitted by the operator
    op.add_column(
        "dataset", sa.Column("admission_state", sa.String(16), nullable=False, server_default="admitted")
    )
    op.alter_column("dataset", "admission_state", server_default="intake")
    op.add_column(
        "dataset",
        sa.Column("successor_id", sa.String(63), sa.ForeignKey("dataset.id", ondelete="SET NULL")),
    )
    op.create_table(
        "demand_request",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("purposes", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("wanted_fields", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("wanted_departments", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("state", sa.String(16), nullable=False, server_default="submitted"),
        sa.Column("filed_by_id", sa.BigInteger, nullable=False),
        sa.Column("filed_by_name", sa.Text, nullable=False),
        sa.Column("institution_id", sa.BigInteger),
        sa.Column("fulfilled_dataset_ids", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("fulfilled_product_id", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "state IN ('submitted', 'accepted', 'declined', 'fulfilled', 'cancelled')",
            name="ck_demand_request_state",
        ),
    )
    op.create_index("ix_demand_request_institution", "demand_request", ["institution_id", "id"])
    op.create_table(
        "dataset_review",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "dataset_id", sa.String(63), sa.ForeignKey("dataset.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("version", sa.Integer),
        sa.Column("run_id", sa.BigInteger),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("override", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("figures", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("failures", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("by_id", sa.BigInteger),
        sa.Column("by_name", sa.Text, nullable=False),
        sa.Column("at", TS, nullable=False, server_default=sa.text("clock_timestamp()")),
        sa.CheckConstraint("decision IN ('admit', 'reject')", name="ck_dataset_review_decision"),
    )
    op.create_index("ix_dataset_review_dataset", "dataset_review", ["dataset_id", "id"])
    op.create_table(
        "dataset_quality",
        sa.Column(
            "dataset_id", sa.String(63), sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("rows_received", sa.BigInteger, nullable=False),
        sa.Column("rows_rejected", sa.BigInteger, nullable=False),
        sa.Column("duplicate_keys", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("completeness", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("completeness_overall", sa.Float, nullable=False),
        sa.Column("validity", sa.Float, nullable=False),
        sa.Column("on_time", sa.Boolean, nullable=False),
        sa.Column("age_hours", sa.Float, nullable=False),
        sa.Column("lag_hours", sa.Float, nullable=False),
        sa.Column("version_at", TS, nullable=False),
        sa.Column("evaluated_at", TS, nullable=False),
    )
    op.create_table(
        "product_rating",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "institution_id",
            sa.BigInteger,
            sa.ForeignKey("principal.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("score", sa.SmallInteger, nullable=False),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("institution_id", "product_id", "period", name="uq_product_rating_month"),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name="ck_product_rating_score"),
        sa.CheckConstraint("period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name="ck_product_rating_period"),
    )
    op.create_index("ix_product_rating_product", "product_rating", ["product_id", "period"])


def downgrade() -> None:
    op.drop_index("ix_product_rating_product", table_name="product_rating")
    op.drop_table("product_rating")
    op.drop_table("dataset_quality")
    op.drop_index("ix_dataset_review_dataset", table_name="dataset_review")
    op.drop_table("dataset_review")
    op.drop_index("ix_demand_request_institution", table_name="demand_request")
    op.drop_table("demand_request")
    op.drop_column("dataset", "successor_id")
    op.drop_column("dataset", "admission_state")
    op.drop_constraint("ck_supplier_admission_status", "supplier", type_="check")
    op.drop_column("supplier", "attachments")
