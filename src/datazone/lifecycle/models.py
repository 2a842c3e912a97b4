from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
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
