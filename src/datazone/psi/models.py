"""PSI tables: the zone's key epochs, its precomputed artifacts per slice version and epoch,
HTTP-native sessions with their chunks, and engine jobs.

Artifacts (OpenMined setups, label tables) are kept in PostgreSQL in chunks, so every replica
serves the same bytes; engine caches live on the worker's disk, where only the worker uses them.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

TS = sa.DateTime(timezone=True)


class PsiKeyEpoch(Base):
    """One zone key for the OPRF (a P-256 scalar), encrypted at rest; its id is the epoch."""

    __tablename__ = "psi_key_epoch"
    __table_args__ = (
        sa.Index("uq_psi_key_epoch_current", "retired_at", unique=True, postgresql_where=sa.text("retired_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    key_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=sa.func.now())
    # retired: no new session or artifact uses it; open sessions finish on it
    retired_at: Mapped[datetime | None] = mapped_column(TS)


class PsiArtifact(Base):
    """What the zone precomputes for a product's slice under one epoch: the OpenMined setup
    message, a label table (per masking clearance) or the engine's unbalanced cache."""

    __tablename__ = "psi_artifact"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "kind", "epoch", "slice_key", "clearance", name="uq_psi_artifact"),
        sa.CheckConstraint("kind IN ('setup', 'labels', 'engine_cache')", name="ck_psi_artifact_kind"),
        sa.CheckConstraint("state IN ('building', 'ready', 'failed')", name="ck_psi_artifact_state"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    product_id: Mapped[str] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.String(16))
    epoch: Mapped[int] = mapped_column(sa.ForeignKey("psi_key_epoch.id"))
    # the slice's dataset and version ("court_dishonest@v3"), plus its filter
    slice_key: Mapped[str] = mapped_column(sa.Text)
    clearance: Mapped[int] = mapped_column(sa.SmallInteger, default=0)
    state: Mapped[str] = mapped_column(sa.String(16), default="building")
    items: Mapped[int | None] = mapped_column(sa.BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    error: Mapped[str | None] = mapped_column(sa.Text)
    seconds: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=sa.func.now())
    ready_at: Mapped[datetime | None] = mapped_column(TS)


class PsiArtifactChunk(Base):
    __tablename__ = "psi_artifact_chunk"

    artifact_id: Mapped[int] = mapped_column(
        sa.ForeignKey("psi_artifact.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)


class PsiSession(Base):
    """An institution's HTTP-native PSI: its set size, declared and paid up front, sent in chunks."""

    __tablename__ = "psi_session"
    __table_args__ = (
        sa.CheckConstraint("set_size > 0", name="ck_psi_session_set_size"),
        sa.CheckConstraint("items_received <= set_size", name="ck_psi_session_items"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"), index=True)
    client_id: Mapped[str] = mapped_column(sa.Text)
    product_id: Mapped[str] = mapped_column(sa.Text)
    purpose: Mapped[str] = mapped_column(sa.Text)
    contract_id: Mapped[int] = mapped_column(sa.BigInteger)
    epoch: Mapped[int] = mapped_column(sa.ForeignKey("psi_key_epoch.id"))
    slice_key: Mapped[str] = mapped_column(sa.Text)
    result: Mapped[str] = mapped_column(sa.String(16))
    labeled: Mapped[bool] = mapped_column(sa.Boolean)
    clearance: Mapped[int] = mapped_column(sa.SmallInteger)
    set_size: Mapped[int] = mapped_column(sa.Integer)
    items_received: Mapped[int] = mapped_column(sa.Integer, default=0)
    max_chunk_items: Mapped[int] = mapped_column(sa.Integer)
    charged_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(TS)
    expires_at: Mapped[datetime] = mapped_column(TS)


class PsiChunk(Base):
    """One chunk's request digest and the zone's answer, kept so a resent chunk is answered
    the same, free, and a different chunk under a used index is refused."""

    __tablename__ = "psi_chunk"

    session_id: Mapped[str] = mapped_column(sa.ForeignKey("psi_session.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    items: Mapped[int] = mapped_column(sa.Integer)
    request_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary)
    response: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=sa.func.now())


class PsiJob(Base):
    """A PSI on SecretFlow's engine, run by a worker against the institution's own side."""

    __tablename__ = "psi_job"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'expired')", name="ck_psi_job_status"
        ),
        sa.Index("ix_psi_job_queued", "created_at", postgresql_where=sa.text("status = 'queued'")),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"), index=True)
    client_id: Mapped[str] = mapped_column(sa.Text)
    product_id: Mapped[str] = mapped_column(sa.Text)
    purpose: Mapped[str] = mapped_column(sa.Text)
    contract_id: Mapped[int] = mapped_column(sa.BigInteger)
    protocol: Mapped[str] = mapped_column(sa.String(16))
    set_size: Mapped[int] = mapped_column(sa.Integer)
    epoch: Mapped[int] = mapped_column(sa.ForeignKey("psi_key_epoch.id"))
    slice_key: Mapped[str] = mapped_column(sa.Text)
    cache_id: Mapped[str | None] = mapped_column(sa.Text)
    have_cache: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    peer_address: Mapped[str] = mapped_column(sa.Text)
    zone_address: Mapped[str] = mapped_column(sa.Text)
    # only SHA-256 of the ticket: the ticket itself is shown once, to the institution
    ticket_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary)
    institution_certificate_pem: Mapped[str | None] = mapped_column(sa.Text)
    zone_certificate_pem: Mapped[str | None] = mapped_column(sa.Text)
    # the zone's TLS key for this job's link, encrypted at rest
    zone_key_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    reason: Mapped[str | None] = mapped_column(sa.Text)
    charged_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # the call that charged the job (its usage events and debit carry it) and the credit the zone
    # posted when the job failed on its side (at most one: set with the credit, under the row lock)
    call_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    credit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entry.id"))
    worker: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(TS)
    expires_at: Mapped[datetime] = mapped_column(TS)
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)
