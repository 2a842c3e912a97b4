from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

RUN_STATUSES = ("new", "running", "succeeded", "failed", "aborted")


class IngestRun(Base):
    """One attempt to bring a dataset's source into the zone as a new version.

    A scheduled run is claimed once by the unique (dataset_id, scheduled_for) pair,
    so a second scheduler started by mistake inserts nothing and runs nothing.
    """

    __tablename__ = "ingest_run"
    __table_args__ = (
        sa.UniqueConstraint("dataset_id", "scheduled_for", name="uq_ingest_run_scheduled"),
        sa.CheckConstraint(f"status IN {RUN_STATUSES!r}", name="ck_ingest_run_status"),
        sa.Index("ix_ingest_run_dataset_created", "dataset_id", "created_at"),
        sa.Index("ix_ingest_run_open", "status", postgresql_where=sa.text("status IN ('new', 'running')")),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("dataset.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.String(16), default="new")
    trigger: Mapped[str] = mapped_column(sa.String(16))  # schedule, manual, cli
    requested_by: Mapped[str] = mapped_column(sa.Text, default="")
    scheduled_for: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    source_override: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(sa.Text)
    backend_pid: Mapped[int | None] = mapped_column(sa.Integer)
    source: Mapped[str | None] = mapped_column(sa.Text)
    source_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    encoding: Mapped[str | None] = mapped_column(sa.String(16))
    version: Mapped[int | None] = mapped_column(sa.Integer)
    rows_read: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rows_loaded: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rows_unchanged: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rows_deleted: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rows_rejected: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    error_code: Mapped[str | None] = mapped_column(sa.String(32))
    error: Mapped[str | None] = mapped_column(sa.Text)
    note: Mapped[str | None] = mapped_column(sa.Text)


class IngestReject(Base):
    """A row set aside by a run, with its line and the reason: the run's downloadable report."""

    __tablename__ = "ingest_reject"

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("ingest_run.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    line: Mapped[int | None] = mapped_column(sa.BigInteger)
    column: Mapped[str | None] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    value: Mapped[str | None] = mapped_column(sa.Text)
