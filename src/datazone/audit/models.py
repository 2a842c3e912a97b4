from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base


class AuditEntry(Base):
    """One control-plane change or one data access. Appended in the request's own
    transaction (no lock shared between requests); a background sealer later assigns
    it a block and a position, and from then on the chain vouches for its content."""

    __tablename__ = "audit_entry"
    __table_args__ = (
        sa.Index("ix_audit_entry_unsealed", "id", postgresql_where=sa.text("block_height IS NULL")),
        sa.Index("ix_audit_entry_block", "block_height", "block_position"),
        sa.Index("ix_audit_entry_suppliers", "supplier_ids", postgresql_using="gin"),
        sa.Index("ix_audit_entry_institution", "institution_id", "id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.clock_timestamp())
    actor_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    actor_name: Mapped[str] = mapped_column(sa.Text)
    actor_kind: Mapped[str] = mapped_column(sa.String(16))
    action: Mapped[str] = mapped_column(sa.String(63), index=True)
    object_type: Mapped[str] = mapped_column(sa.String(31))
    object_id: Mapped[str] = mapped_column(sa.Text)
    purpose: Mapped[str | None] = mapped_column(sa.String(31))
    entity_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    entities: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # whose data was used (departments) and who used it (institution): each sees its own part
    supplier_ids: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    institution_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    block_height: Mapped[int | None] = mapped_column(sa.Integer)
    block_position: Mapped[int | None] = mapped_column(sa.Integer)


class AuditBlock(Base):
    """A sealed block: the Merkle root of its entries, chained to the previous block's hash."""

    __tablename__ = "audit_block"

    height: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    prev_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    merkle_root: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    entry_count: Mapped[int] = mapped_column(sa.Integer)
    first_entry_id: Mapped[int] = mapped_column(sa.BigInteger)
    last_entry_id: Mapped[int] = mapped_column(sa.BigInteger)
    sealed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    block_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32), unique=True)
