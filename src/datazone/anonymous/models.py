"""Anonymous-query tables: a product's sealed bucket table per key epoch and data versions.

A table is built by the worker and never changed once ready, so every replica serves the same
bytes and a gateway may keep buckets in memory. The database itself refuses a ready table
whose smallest bucket is below k.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

TS = sa.DateTime(timezone=True)


class AnonymousTable(Base):
    """One build of a product's buckets: which spec, key epoch and data it was sealed from."""

    __tablename__ = "anonymous_table"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "sealed_sha256", "epoch", "data_key", name="uq_anonymous_table"),
        sa.CheckConstraint("answer IN ('existence', 'full')", name="ck_anonymous_table_answer"),
        sa.CheckConstraint("state IN ('building', 'ready', 'failed')", name="ck_anonymous_table_state"),
        sa.CheckConstraint("prefix_bits IS NULL OR prefix_bits BETWEEN 0 AND 24", name="ck_anonymous_table_bits"),
        sa.CheckConstraint(
            "state <> 'ready' OR (prefix_bits IS NOT NULL AND smallest_bucket >= k)", name="ck_anonymous_table_k"
        ),
        sa.Index("ix_anonymous_table_product", "product_id", "state"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    product_id: Mapped[str] = mapped_column(sa.Text)
    # SHA-256 of the spec parts the table seals (service.sealed_digest): a new k, clearance or
    # population is a new table; a new price or description is not
    sealed_sha256: Mapped[str] = mapped_column(sa.String(64))
    epoch: Mapped[int] = mapped_column(sa.ForeignKey("psi_key_epoch.id"))
    # "court_dishonest@v3;mr_registration@v5" (+ ";as_of=2026-11-21" for full answers)
    data_key: Mapped[str] = mapped_column(sa.Text)
    data_versions: Mapped[dict[str, Any]] = mapped_column(JSONB)
    as_of: Mapped[date] = mapped_column(sa.Date)
    answer: Mapped[str] = mapped_column(sa.String(16))
    k: Mapped[int] = mapped_column(sa.Integer)
    prefix_bits: Mapped[int | None] = mapped_column(sa.SmallInteger)
    clearance: Mapped[int] = mapped_column(sa.SmallInteger)
    state: Mapped[str] = mapped_column(sa.String(16), default="building")
    candidates: Mapped[int | None] = mapped_column(sa.BigInteger)
    members: Mapped[int | None] = mapped_column(sa.BigInteger)
    smallest_bucket: Mapped[int | None] = mapped_column(sa.BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    error: Mapped[str | None] = mapped_column(sa.Text)
    seconds: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=sa.func.now())
    ready_at: Mapped[datetime | None] = mapped_column(TS)
    # a newer table replaced it; kept a while for replays and clients mid-query, then dropped
    superseded_at: Mapped[datetime | None] = mapped_column(TS)


class AnonymousBucket(Base):
    """One bucket of a table: its candidates count and its sealed label table (privacy/labels.py)."""

    __tablename__ = "anonymous_bucket"

    table_id: Mapped[int] = mapped_column(sa.ForeignKey("anonymous_table.id", ondelete="CASCADE"), primary_key=True)
    bucket: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    candidates: Mapped[int] = mapped_column(sa.Integer)
    entries: Mapped[int] = mapped_column(sa.Integer)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
