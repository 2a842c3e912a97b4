from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base


class Product(Base):
    """A data product: its applied spec and where it is in its lifecycle."""

    __tablename__ = "product"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('draft', 'published', 'deprecated', 'retired')", name="ck_product_state"
        ),
        sa.CheckConstraint(
            "successor_id IS NULL OR successor_id <> id", name="ck_product_successor_not_self"
        ),
        # a seamless switch needs somewhere to switch to
        sa.CheckConstraint("NOT seamless_switch OR successor_id IS NOT NULL", name="ck_product_seamless"),
    )

    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    spec_sha256: Mapped[str] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(16), default="draft", index=True)
    successor_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("product.id", name="fk_product_successor"), index=True
    )
    seamless_switch: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )


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
