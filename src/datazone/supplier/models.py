from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base


class Supplier(Base):
    """A government department, or another supplier, that sends data to the zone."""

    __tablename__ = "supplier"
    __table_args__ = (
        sa.CheckConstraint(
            "admission_status IN ('applied', 'admitted', 'rejected', 'blacklisted')",
            name="ck_supplier_admission_status",
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    name_en: Mapped[str] = mapped_column(sa.Text, default="")
    kind: Mapped[str] = mapped_column(sa.String(16), default="department")
    # applied -> admitted | rejected; admitted <-> blacklisted (lifecycle MACHINES["supplier"])
    admission_status: Mapped[str] = mapped_column(sa.String(16), default="admitted")
    # documents the admission was decided on: [{"kind": ..., "reference": ...}], references only
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )
