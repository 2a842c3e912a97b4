from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

# principal.supplier_id references supplier.id: that table must be in the metadata wherever this one is
from datazone.supplier import models as _supplier_models  # noqa: F401


class Principal(Base):
    """Someone who acts on the control plane: an operator, a department or an institution."""

    __tablename__ = "principal"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('operator', 'department', 'institution')", name="ck_principal_kind"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.Text, unique=True)
    roles: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    supplier_id: Mapped[str | None] = mapped_column(sa.ForeignKey("supplier.id"))
    # a suspended principal's keys, OAuth clients and tokens are refused from the next request
    suspended_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    suspend_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class ApiKey(Base):
    """A bearer key for the control plane. Only a SHA-256 of the secret is stored:
    the secret is 256 random bits, so a fast hash is enough (no password stretching needed)."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(sa.String(24), primary_key=True)
    principal_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id", ondelete="CASCADE"), index=True)
    secret_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
