from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import MAX_REASON, RequestBody


class LedgerEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    institution_id: int
    kind: str
    amount_fen: int
    period: str
    product_id: str | None
    usage_count: int
    memo: str
    reverses_id: int | None
    created_by: int | None
    at: datetime


class CreditIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    amount_fen: int | None = Field(default=None, description="empty: all that remains of the debit")
    reason: str = Field(max_length=MAX_REASON)


class StatementLineOut(BaseModel):
    product_id: str
    units: int
    free_units: int
    debit_fen: int
    credit_fen: int
    net_fen: int
    net_yuan: str = Field(description="the net as yuan text, for people; amounts are integer fen")


class StatementOut(BaseModel):
    institution_id: int
    period: str = Field(description="YYYY-MM, Asia/Shanghai calendar")
    lines: list[StatementLineOut]
    units: int
    free_units: int
    debit_fen: int
    credit_fen: int
    net_fen: int
    net_yuan: str
    entry_ids: list[int]
    created_at: datetime
