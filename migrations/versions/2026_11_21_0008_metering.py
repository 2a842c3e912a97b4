"""metering and billing: plans, meters, usage events, idempotent responses, ledger

Revision ID: 2026_11_21_0008
Revises: 2026_11_21_0007
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0008"
down_revision = "2026_11_21_0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
DEFAULT_PLAN_ID = "public-standard"


def upgrade() -> None:
    op.create_table(
        "plan",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), index=True),
        sa.Column("free_units", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("free_period", sa.String(8), nullable=False, server_default="day"),
        sa.Column("unit_price_fen", sa.BigInteger),
        sa.Column("monthly_cap_fen", sa.BigInteger),
        sa.Column("quota_units", sa.BigInteger),
        sa.Column("quota_period", sa.String(8)),
        sa.Column("rate_per_second", sa.Float, nullable=False),
        sa.Column("burst", sa.Integer, nullable=False),
        sa.Column("created_by", sa.BigInteger, sa.ForeignKey("principal.id")),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("free_units >= 0", name="ck_plan_free_units"),
        sa.CheckConstraint("free_period IN ('day', 'month')", name="ck_plan_free_period"),
        sa.CheckConstraint("unit_price_fen IS NULL OR unit_price_fen >= 0", name="ck_plan_unit_price"),
        sa.CheckConstraint("monthly_cap_fen IS NULL OR monthly_cap_fen >= 0", name="ck_plan_monthly_cap"),
        sa.CheckConstraint(
            "(quota_units IS NULL AND quota_period IS NULL)"
            " OR (quota_units >= 0 AND quota_period IN ('day', 'month'))",
            name="ck_plan_quota",
        ),
        sa.CheckConstraint("rate_per_second > 0", name="ck_plan_rate"),
        sa.CheckConstraint("burst >= 1", name="ck_plan_burst"),
    )
    # the public plan every contract has unless it names another: each product's own price,
    # no free units, no quota or cap, and a rate limit that only stops runaway clients
    op.execute(
        sa.text(
            "INSERT INTO plan (id, name, free_units, free_period, rate_per_second, burst)"
            " VALUES (:id, 'Public standard: each product at its list price', 0, 'day', 1000, 2000)"
        ).bindparams(id=DEFAULT_PLAN_ID)
    )
    op.add_column(
        "contract", sa.Column("plan_id", sa.String(64), sa.ForeignKey("plan.id", name="fk_contract_plan"))
    )
    op.execute(sa.text("UPDATE contract SET plan_id = :id").bindparams(id=DEFAULT_PLAN_ID))
    op.alter_column("contract", "plan_id", nullable=False)

    op.create_table(
        "meter",
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), primary_key=True),
        sa.Column("tat", TS),
    )
    op.create_table(
        "meter_count",
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        sa.Column("units", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("free_units", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("charged_fen", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "ledger_entry",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("amount_fen", sa.BigInteger, nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("product_id", sa.Text),
        sa.Column("usage_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("memo", sa.Text, nullable=False),
        sa.Column("reverses_id", sa.BigInteger, sa.ForeignKey("ledger_entry.id"), index=True),
        sa.Column("created_by", sa.BigInteger, sa.ForeignKey("principal.id")),
        sa.Column("at", TS, nullable=False),
        sa.CheckConstraint("kind IN ('debit', 'credit')", name="ck_ledger_entry_kind"),
        sa.CheckConstraint("amount_fen > 0", name="ck_ledger_entry_amount"),
        sa.CheckConstraint("period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name="ck_ledger_entry_period"),
        sa.CheckConstraint("(kind = 'credit') = (reverses_id IS NOT NULL)", name="ck_ledger_entry_reverses"),
    )
    op.create_index("ix_ledger_entry_institution_period", "ledger_entry", ["institution_id", "period"])
    op.create_table(
        "usage_event",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("call_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("contract_id", sa.BigInteger, nullable=False),
        sa.Column("plan_id", sa.String(64), sa.ForeignKey("plan.id"), nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("price_fen", sa.BigInteger, nullable=False),
        sa.Column("free", sa.Boolean, nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("debit_id", sa.BigInteger, sa.ForeignKey("ledger_entry.id")),
        sa.CheckConstraint("price_fen >= 0", name="ck_usage_event_price"),
    )
    op.create_index("ix_usage_event_institution_at", "usage_event", ["institution_id", "at", "id"])
    op.create_index("ix_usage_event_at", "usage_event", ["at", "id"])
    op.create_table(
        "idempotent_answer",
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.SmallInteger),
        sa.Column("body", postgresql.JSONB),
        sa.Column("headers", postgresql.JSONB),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_idempotent_answer_created_at", "idempotent_answer", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotent_answer")
    op.drop_table("usage_event")
    op.drop_table("ledger_entry")
    op.drop_table("meter_count")
    op.drop_table("meter")
    op.drop_constraint("fk_contract_plan", "contract", type_="foreignkey")
    op.drop_column("contract", "plan_id")
    op.drop_table("plan")
