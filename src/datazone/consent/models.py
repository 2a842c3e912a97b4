from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base


class Consent(Base):
    """An enterprise's own consent (主体授权) to be queried by one institution, for one purpose,
    registered by that institution with a reference to and a hash of the signed evidence."""

    __tablename__ = "consent"
    __table_args__ = (
        sa.CheckConstraint("valid_to > valid_from", name="ck_consent_period"),
        sa.CheckConstraint("evidence_sha256 ~ '^[0-9a-f]{64}$'", name="ck_consent_evidence_sha256"),
        # the per-request check: one institution, a batch of USCCs
        sa.Index("ix_consent_institution_uscc", "institution_id", "uscc"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"))
    uscc: Mapped[str] = mapped_column(sa.String(18))
    purpose: Mapped[str] = mapped_column(sa.String(31))
    # NULL: any product of the institution's contract
    products: Mapped[list[str] | None] = mapped_column(ARRAY(sa.Text))
    valid_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    valid_to: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    evidence_ref: Mapped[str] = mapped_column(sa.Text)
    evidence_sha256: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoke_reason: Mapped[str | None] = mapped_column(sa.Text)
