from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

PERIODS = ("day", "month")
DEFAULT_PLAN_ID = "public-standard"


class Plan(Base):
    """What a contract's calls may use and cost: free units, price, monthly cap, quota, rate limit.

    `institution_id` NULL is a public plan; set, a private plan negotiated with that one institution."""

    __tablename__ = "plan"
    __table_args__ = (
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

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    institution_id: Mapped[int | None] = mapped_column(sa.ForeignKey("principal.id"), index=True)
    free_units: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    free_period: Mapped[str] = mapped_column(sa.String(8), default="day")
    # NULL: each product's own price_fen
    unit_price_fen: Mapped[int | None] = mapped_column(sa.BigInteger)
    monthly_cap_fen: Mapped[int | None] = mapped_column(sa.BigInteger)
    quota_units: Mapped[int | None] = mapped_column(sa.BigInteger)
    quota_period: Mapped[str | None] = mapped_column(sa.String(8))
    rate_per_second: Mapped[float] = mapped_column(sa.Float)
    burst: Mapped[int] = mapped_column(sa.Integer)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("principal.id"))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class MeterRate(Base):
    """A contract's rate limiter state (GCRA: the theoretical arrival time of its next call).

    Kept per contract because the rate and burst come from the contract's plan: state shared across
    an institution's contracts would let a slow private plan throttle calls under a fast one. No foreign
    key: admission writes it from a transaction of its own (`meter_admit`), which cannot see a contract
    created by the caller's own uncommitted transaction."""

    __tablename__ = "meter_rate"

    contract_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    tat: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class MeterCount(Base):
    """An institution's admitted units, free units and charged fen in one Shanghai day ('YYYY-MM-DD')
    or month ('YYYY-MM'). Counted up by `meter_admit` (a reservation, in a transaction of its own) and
    down again for what a call did not bill or a credit gave back. No foreign key, as for MeterRate."""

    __tablename__ = "meter_count"

    institution_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    period: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    units: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    free_units: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    charged_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class UsageEvent(Base):
    """Billed units of one institution's call at one price: one enterprise answered (quantity 1,
    `uscc` set), or `quantity` units that name no enterprise (the items of a PSI set, anonymous
    queries), which a metering system counts as one event of N units rather than N rows."""

    __tablename__ = "usage_event"
    __table_args__ = (
        sa.CheckConstraint("price_fen >= 0", name="ck_usage_event_price"),
        sa.CheckConstraint("quantity >= 1", name="ck_usage_event_quantity"),
        sa.CheckConstraint("uscc IS NULL OR quantity = 1", name="ck_usage_event_named_unit"),
        sa.Index("ix_usage_event_institution_at", "institution_id", "at", "id"),
        sa.Index("ix_usage_event_at", "at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # the call that billed it (one call, many units)
    call_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"))
    client_id: Mapped[str] = mapped_column(sa.Text)
    contract_id: Mapped[int] = mapped_column(sa.BigInteger)
    plan_id: Mapped[str] = mapped_column(sa.ForeignKey("plan.id"))
    product_id: Mapped[str] = mapped_column(sa.Text)
    purpose: Mapped[str] = mapped_column(sa.Text)
    # NULL for a unit with no named enterprise: an item of a PSI set, which the zone never sees
    uscc: Mapped[str | None] = mapped_column(sa.String(18))
    # the price of each unit (the event's amount is quantity x price_fen)
    price_fen: Mapped[int] = mapped_column(sa.BigInteger)
    free: Mapped[bool] = mapped_column(sa.Boolean)
    quantity: Mapped[int] = mapped_column(sa.BigInteger, default=1, server_default="1")
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    # the ledger debit that charged it (NULL when the call charged nothing)
    debit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entry.id"))


class IdempotentAnswer(Base):
    """The answer given to an institution's call under an Idempotency-Key, kept for replay.

    `status` NULL: the call holding the key has not answered yet (its transaction holds the row)."""

    __tablename__ = "idempotent_answer"

    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[int | None] = mapped_column(sa.SmallInteger)
    body: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
