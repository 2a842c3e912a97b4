from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base


class Dataset(Base):
    """A dataset a department sends; its rows live in zone.<id>, one version per successful ingest."""

    __tablename__ = "dataset"

    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    supplier_id: Mapped[str] = mapped_column(sa.ForeignKey("supplier.id"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    spec_sha256: Mapped[str] = mapped_column(sa.String(64))
    current_version: Mapped[int | None] = mapped_column(sa.Integer)
    current_rows: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # data admission and retirement (lifecycle MACHINES["dataset"]); only admitted or
    # deprecated data may be served
    admission_state: Mapped[str] = mapped_column(sa.String(16), server_default="intake")
    successor_id: Mapped[str | None] = mapped_column(sa.ForeignKey("dataset.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )


class DatasetVersion(Base):
    """One applied version of a dataset: what changed and which run brought it."""

    __tablename__ = "dataset_version"

    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.BigInteger)
    rows_total: Mapped[int] = mapped_column(sa.BigInteger)
    rows_loaded: Mapped[int] = mapped_column(sa.BigInteger)
    rows_deleted: Mapped[int] = mapped_column(sa.BigInteger)
    source: Mapped[str] = mapped_column(sa.Text)
    source_sha256: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


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
