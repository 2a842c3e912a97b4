from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

CONTRACT_STATUSES = ("active", "suspended", "terminated")


class Contract(Base):
    """An institution's agreement with the operator: which products, for which purposes,
    in which period, and how much it may see in clear (its clearance)."""

    __tablename__ = "contract"
    __table_args__ = (
        sa.CheckConstraint("status IN ('active', 'suspended', 'terminated')", name="ck_contract_status"),
        sa.CheckConstraint("clearance BETWEEN 1 AND 4", name="ck_contract_clearance"),
        sa.CheckConstraint("valid_to > valid_from", name="ck_contract_period"),
        sa.CheckConstraint("max_batch > 0", name="ck_contract_max_batch"),
        sa.CheckConstraint("psi_max_set IS NULL OR psi_max_set > 0", name="ck_contract_psi_max_set"),
        sa.CheckConstraint(
            "scoring_max_batch IS NULL OR scoring_max_batch > 0", name="ck_contract_scoring_max_batch"
        ),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"), index=True)
    purposes: Mapped[list[str]] = mapped_column(ARRAY(sa.Text))
    products: Mapped[list[str]] = mapped_column(ARRAY(sa.Text))
    # fields of grade <= clearance are shown in clear, higher grades masked; grade 5 never leaves the zone
    clearance: Mapped[int] = mapped_column(sa.SmallInteger, default=2)
    valid_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    valid_to: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    max_batch: Mapped[int] = mapped_column(sa.Integer, default=1000)
    # the largest set a PSI may send under this contract (NULL: each product's own max_set)
    psi_max_set: Mapped[int | None] = mapped_column(sa.Integer)
    # the most enterprises one scoring job may hold under this contract (NULL: each product's max_batch)
    scoring_max_batch: Mapped[int | None] = mapped_column(sa.Integer)
    # the plan pricing and limiting its calls: a public plan or the institution's own private one
    plan_id: Mapped[str] = mapped_column(sa.ForeignKey("plan.id"))
    created_by: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    status_changed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    status_changed_by: Mapped[int | None] = mapped_column(sa.ForeignKey("principal.id"))
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
