from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base


class Grant(Base):
    """A department's authorization (授权) to use its datasets: for which purposes, products
    (NULL: any) and institutions (NULL: all), in which period, until revoked.

    The table is `dataset_grant` because GRANT is an SQL keyword."""

    __tablename__ = "dataset_grant"
    __table_args__ = (
        sa.CheckConstraint("valid_to > valid_from", name="ck_dataset_grant_period"),
        sa.CheckConstraint("cardinality(datasets) > 0", name="ck_dataset_grant_datasets"),
        sa.CheckConstraint("cardinality(purposes) > 0", name="ck_dataset_grant_purposes"),
        # the per-request check looks grants up by dataset
        sa.Index("ix_dataset_grant_datasets", "datasets", postgresql_using="gin"),
        sa.Index("ix_dataset_grant_department", "department", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    department: Mapped[str] = mapped_column(sa.ForeignKey("supplier.id"))
    datasets: Mapped[list[str]] = mapped_column(ARRAY(sa.Text))
    purposes: Mapped[list[str]] = mapped_column(ARRAY(sa.Text))
    products: Mapped[list[str] | None] = mapped_column(ARRAY(sa.Text))
    institutions: Mapped[list[int] | None] = mapped_column(ARRAY(sa.BigInteger))
    valid_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    valid_to: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    created_by: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_by: Mapped[int | None] = mapped_column(sa.ForeignKey("principal.id"))
    revoke_reason: Mapped[str | None] = mapped_column(sa.Text)
