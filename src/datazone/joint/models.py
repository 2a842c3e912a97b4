"""Joint statistics and joint modeling jobs: the job, the encrypted label columns a statistics
job receives, and the sample's members kept for the differencing check.

A job's sample is the institution's list of enterprises (the zone learns who is in it, as a
secure score's does; docs/joint-modeling.md). Labels never reach these tables: a statistics job
holds them only as ciphertexts under the institution's key, a training job never at all.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

TS = sa.DateTime(timezone=True)

KINDS = ("stats", "train")
STATUSES = ("receiving", "queued", "running", "succeeded", "failed", "expired")


class JointJob(Base):
    __tablename__ = "joint_job"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('stats', 'train')", name="ck_joint_job_kind"),
        sa.CheckConstraint(
            "status IN ('receiving', 'queued', 'running', 'succeeded', 'failed', 'expired')",
            name="ck_joint_job_status",
        ),
        sa.Index("ix_joint_job_queued", "created_at", postgresql_where=sa.text("status = 'queued'")),
        sa.Index("ix_joint_job_institution", "institution_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(8))
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"))
    client_id: Mapped[str] = mapped_column(sa.Text)
    product_id: Mapped[str] = mapped_column(sa.Text)
    purpose: Mapped[str] = mapped_column(sa.Text)
    contract_id: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    features: Mapped[list[str]] = mapped_column(ARRAY(sa.Text))
    # the job's parameters as the institution sent them (bins, edges, grouped, segments; epochs,
    # batch size, learning rate, scorecard ...): never a label, a key or a weight
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    sample_size: Mapped[int] = mapped_column(sa.Integer)
    # the enterprises, in the institution's row order (a training job's rows follow it)
    sample: Mapped[list[str]] = mapped_column(ARRAY(sa.String(18)))
    # statistics: the institution's HEU public key (its own serialization, never pickled)
    public_key: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    # statistics: the encrypted sums per bin and group, as the result endpoint sends them
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # training: the engine link, as a PSI engine job's
    peer_address: Mapped[str | None] = mapped_column(sa.Text)
    zone_address: Mapped[str | None] = mapped_column(sa.Text)
    ticket_sha256: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    institution_certificate_pem: Mapped[str | None] = mapped_column(sa.Text)
    zone_certificate_pem: Mapped[str | None] = mapped_column(sa.Text)
    zone_key_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    progress_phase: Mapped[str | None] = mapped_column(sa.Text)
    progress_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    progress_total: Mapped[int] = mapped_column(sa.Integer, default=0)
    # a statistics job's zone features, computed by a worker while the bank encrypts and sends its
    # columns (`features_worker` marks who computes them); dropped when the job ends
    features_worker: Mapped[str | None] = mapped_column(sa.Text)
    zone_features: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    # what the zone's side reports of a finished job: seconds per phase, bytes sent (no model)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    charged_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    call_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    credit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entry.id"))
    worker: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(TS)
    expires_at: Mapped[datetime] = mapped_column(TS)
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)


class JointColumn(Base):
    """One encrypted column a statistics job received (the labels, or a segment's indicators)."""

    __tablename__ = "joint_column"

    job_id: Mapped[str] = mapped_column(sa.ForeignKey("joint_job.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=sa.func.now())


class JointSampleMember(Base):
    """A job's sample member, as a keyed digest: what the differencing check compares."""

    __tablename__ = "joint_sample_member"
    __table_args__ = (sa.Index("ix_joint_sample_member", "member"),)

    job_id: Mapped[str] = mapped_column(sa.ForeignKey("joint_job.id", ondelete="CASCADE"), primary_key=True)
    member: Mapped[bytes] = mapped_column(sa.LargeBinary, primary_key=True)
