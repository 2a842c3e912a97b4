"""Secure scoring tables: registered models (their encrypted weights or points only), the
re-randomization factors kept ready per key, batch jobs with their enterprises and stored
chunks, and the tally the per-enterprise caps count.

No table holds a plaintext weight, point or score: a model row keeps the institution's
registration document (Paillier ciphertexts and public numbers), a chunk keeps the packed,
re-randomized ciphertexts it returned, and factors are sealed at rest (a factor known to the
institution would strip the re-randomization of the score it sealed).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

TS = sa.DateTime(timezone=True)

MODEL_STATES = ("pending_review", "approved", "rejected", "retired")
# states in which a model's name stays taken
LIVE_MODEL_STATES = ("pending_review", "approved")
JOB_STATUSES = ("queued", "running", "succeeded", "failed")


class ScoringModel(Base):
    """An institution's model over a scoring product's features, as registered: the zone never
    holds more of it than the ciphertexts and the public bins."""

    __tablename__ = "scoring_model"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('pending_review', 'approved', 'rejected', 'retired')", name="ck_scoring_model_state"
        ),
        sa.CheckConstraint("kind IN ('logistic', 'scorecard')", name="ck_scoring_model_kind"),
        sa.Index(
            "uq_scoring_model_live_name",
            "institution_id",
            "name",
            unique=True,
            postgresql_where=sa.text("state IN ('pending_review', 'approved')"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"), index=True)
    client_id: Mapped[str] = mapped_column(sa.Text)
    name: Mapped[str] = mapped_column(sa.Text)
    product_id: Mapped[str] = mapped_column(sa.Text)
    purpose: Mapped[str] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.String(16))
    scale: Mapped[int] = mapped_column(sa.BigInteger)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # [{"name", "bins"?}]: the public part, in the model's order
    features: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # the registration document as posted: ciphertexts, bins and the public key
    registration: Mapped[dict[str, Any]] = mapped_column(JSONB)
    registration_sha256: Mapped[str] = mapped_column(sa.String(64))
    key_fingerprint: Mapped[str] = mapped_column(sa.String(32), index=True)
    key_bits: Mapped[int] = mapped_column(sa.Integer)
    score_bits: Mapped[int] = mapped_column(sa.Integer)
    slot_bits: Mapped[int] = mapped_column(sa.Integer)
    slots: Mapped[int] = mapped_column(sa.Integer)
    # scores are rounded to multiples of this many fixed-point units
    resolution: Mapped[int] = mapped_column(sa.BigInteger)
    state: Mapped[str] = mapped_column(sa.String(16), default="pending_review")
    created_at: Mapped[datetime] = mapped_column(TS)
    reviewed_at: Mapped[datetime | None] = mapped_column(TS)
    reviewed_by: Mapped[int | None] = mapped_column(sa.ForeignKey("principal.id"))
    review_reason: Mapped[str | None] = mapped_column(sa.Text)
    retired_at: Mapped[datetime | None] = mapped_column(TS)
    retired_by: Mapped[int | None] = mapped_column(sa.ForeignKey("principal.id"))
    retire_reason: Mapped[str | None] = mapped_column(sa.Text)


class ScoringFactor(Base):
    """One re-randomization factor r^n mod n^2 for a public key, sealed; used once (claiming deletes it)."""

    __tablename__ = "scoring_factor"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    key_fingerprint: Mapped[str] = mapped_column(sa.String(32), index=True)
    factor_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=sa.func.now())


class ScoringJob(Base):
    """A batch of enterprises scored by a worker, chunk by chunk; billed when created."""

    __tablename__ = "scoring_job"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name="ck_scoring_job_status"
        ),
        sa.CheckConstraint("chunks_done <= chunks", name="ck_scoring_job_progress"),
        sa.Index(
            "ix_scoring_job_open", "created_at", postgresql_where=sa.text("status IN ('queued', 'running')")
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"), index=True)
    client_id: Mapped[str] = mapped_column(sa.Text)
    model_id: Mapped[str] = mapped_column(sa.ForeignKey("scoring_model.id"), index=True)
    product_id: Mapped[str] = mapped_column(sa.Text)
    purpose: Mapped[str] = mapped_column(sa.Text)
    contract_id: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    total: Mapped[int] = mapped_column(sa.Integer)
    found: Mapped[int] = mapped_column(sa.Integer)
    chunk_size: Mapped[int] = mapped_column(sa.Integer)
    chunks: Mapped[int] = mapped_column(sa.Integer)
    chunks_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    charged_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # the call that charged the job (its usage events and debit carry it) and the credit the zone
    # posted when the job failed on its side (at most one: set with the credit, under the row lock)
    call_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    credit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entry.id"))
    worker: Mapped[str | None] = mapped_column(sa.Text)
    # the running worker's last sign of life: a job quiet for scoring_stale_minutes is taken over
    heartbeat_at: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS)
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)
    error: Mapped[str | None] = mapped_column(sa.Text)


class ScoringJobItem(Base):
    """The job's enterprises in the order sent, and whether each is in the zone."""

    __tablename__ = "scoring_job_item"

    job_id: Mapped[str] = mapped_column(sa.ForeignKey("scoring_job.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    uscc: Mapped[str] = mapped_column(sa.String(18))
    found: Mapped[bool] = mapped_column(sa.Boolean)


class ScoringChunk(Base):
    """A computed chunk's answer, exactly as served: a resent download gets the same bytes."""

    __tablename__ = "scoring_chunk"

    job_id: Mapped[str] = mapped_column(sa.ForeignKey("scoring_job.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    found: Mapped[int] = mapped_column(sa.Integer)
    body: Mapped[bytes] = mapped_column(sa.LargeBinary)
    fresh_factors: Mapped[int] = mapped_column(sa.Integer, default=0)
    worker: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=sa.func.now())


class ScoringTally(Base):
    """One score of one enterprise for one institution by one product: what the caps count."""

    __tablename__ = "scoring_tally"
    __table_args__ = (sa.Index("ix_scoring_tally_cap", "institution_id", "product_id", "uscc", "at"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"))
    product_id: Mapped[str] = mapped_column(sa.Text)
    uscc: Mapped[str] = mapped_column(sa.String(18))
    at: Mapped[datetime] = mapped_column(TS)
    model_id: Mapped[str] = mapped_column(sa.String(40))
    job_id: Mapped[str | None] = mapped_column(sa.String(40))
