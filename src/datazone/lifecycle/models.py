from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base


class Transition(Base):
    """One lifecycle transition of a supplier, dataset, product or demand: who, when, why."""

    __tablename__ = "lifecycle_transition"
    __table_args__ = (sa.Index("ix_lifecycle_transition_subject", "subject_type", "subject_id", "id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    subject_type: Mapped[str] = mapped_column(sa.String(16))
    subject_id: Mapped[str] = mapped_column(sa.Text)
    from_state: Mapped[str | None] = mapped_column(sa.String(31))
    to_state: Mapped[str] = mapped_column(sa.String(31))
    by_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    by_name: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.clock_timestamp())


DEMAND_STATES = ("submitted", "accepted", "declined", "fulfilled", "cancelled")


class DemandRequest(Base):
    """A demand for data (需求申请) filed by an institution or by the operator."""

    __tablename__ = "demand_request"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('submitted', 'accepted', 'declined', 'fulfilled', 'cancelled')",
            name="ck_demand_request_state",
        ),
        sa.Index("ix_demand_request_institution", "institution_id", "id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    purposes: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    wanted_fields: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    wanted_departments: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    state: Mapped[str] = mapped_column(sa.String(16), default="submitted")
    filed_by_id: Mapped[int] = mapped_column(sa.BigInteger)
    filed_by_name: Mapped[str] = mapped_column(sa.Text)
    # the institution the demand is for: null when the operator filed it for itself
    institution_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    fulfilled_dataset_ids: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    fulfilled_product_id: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )


class DatasetReview(Base):
    """One data admission decision and the sample quality figures it was taken on."""

    __tablename__ = "dataset_review"
    __table_args__ = (
        sa.CheckConstraint("decision IN ('admit', 'reject')", name="ck_dataset_review_decision"),
        sa.Index("ix_dataset_review_dataset", "dataset_id", "id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("dataset.id", ondelete="CASCADE"))
    version: Mapped[int | None] = mapped_column(sa.Integer)
    run_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    decision: Mapped[str] = mapped_column(sa.String(8))
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    override: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    reason: Mapped[str] = mapped_column(sa.Text)
    figures: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    failures: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    by_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    by_name: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.clock_timestamp())


class DatasetQuality(Base):
    """Quality figures of one dataset version; timeliness is refreshed until a newer version arrives."""

    __tablename__ = "dataset_quality"

    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    rows_received: Mapped[int] = mapped_column(sa.BigInteger)
    rows_rejected: Mapped[int] = mapped_column(sa.BigInteger)
    duplicate_keys: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    completeness: Mapped[dict[str, float]] = mapped_column(JSONB, default=dict)
    completeness_overall: Mapped[float] = mapped_column(sa.Float)
    validity: Mapped[float] = mapped_column(sa.Float)
    on_time: Mapped[bool] = mapped_column(sa.Boolean)
    age_hours: Mapped[float] = mapped_column(sa.Float)
    lag_hours: Mapped[float] = mapped_column(sa.Float)
    version_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    evaluated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class ProductRating(Base):
    """An institution's rating of a product for one month; rating again in that month replaces it."""

    __tablename__ = "product_rating"
    __table_args__ = (
        sa.UniqueConstraint("institution_id", "product_id", "period", name="uq_product_rating_month"),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name="ck_product_rating_score"),
        sa.CheckConstraint("period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name="ck_product_rating_period"),
        sa.Index("ix_product_rating_product", "product_id", "period"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id", ondelete="CASCADE"))
    product_id: Mapped[str] = mapped_column(sa.Text)
    period: Mapped[str] = mapped_column(sa.String(7))  # YYYY-MM, Asia/Shanghai
    score: Mapped[int] = mapped_column(sa.SmallInteger)
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )
