from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base


class Product(Base):
    """A data product: its applied spec and where it is in its lifecycle."""

    __tablename__ = "product"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('draft', 'published', 'deprecated', 'retired')", name="ck_product_state"
        ),
        sa.CheckConstraint(
            "successor_id IS NULL OR successor_id <> id", name="ck_product_successor_not_self"
        ),
        # a seamless switch needs somewhere to switch to
        sa.CheckConstraint("NOT seamless_switch OR successor_id IS NOT NULL", name="ck_product_seamless"),
    )

    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    spec_sha256: Mapped[str] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(16), default="draft", index=True)
    successor_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("product.id", name="fk_product_successor"), index=True
    )
    seamless_switch: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )
