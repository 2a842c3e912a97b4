from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

KINDS = ("debit", "credit")


class LedgerEntry(Base):
    """A debit (what one call charged) or a credit (a reversal of a debit, whole or part).

    Entries are never updated or deleted: a statement is the sum of its period's entries."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('debit', 'credit')", name="ck_ledger_entry_kind"),
        sa.CheckConstraint("amount_fen > 0", name="ck_ledger_entry_amount"),
        sa.CheckConstraint("period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name="ck_ledger_entry_period"),
        sa.CheckConstraint("(kind = 'credit') = (reverses_id IS NOT NULL)", name="ck_ledger_entry_reverses"),
        sa.Index("ix_ledger_entry_institution_period", "institution_id", "period"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"))
    kind: Mapped[str] = mapped_column(sa.String(8))
    amount_fen: Mapped[int] = mapped_column(sa.BigInteger)
    # the Shanghai month the charge belongs to; a credit takes its debit's month
    period: Mapped[str] = mapped_column(sa.String(7))
    product_id: Mapped[str | None] = mapped_column(sa.Text)
    usage_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    memo: Mapped[str] = mapped_column(sa.Text)
    reverses_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entry.id"), index=True)
    # NULL for debits: the gateway's metering posts them for the institution's call
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("principal.id"))
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
