from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import MAX_NAME, Int4, RequestBody


class PlanIn(RequestBody):
    """Values are checked by the service, so that every problem is listed at once."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="slug: a-z, 0-9 and '-'")
    name: str = Field(min_length=1, max_length=MAX_NAME)
    institution_id: int | None = Field(default=None, description="set: a private plan for this institution")
    free_units: int = 0
    free_period: str = Field(default="day", description="day or month (Asia/Shanghai calendar)")
    unit_price_fen: int | None = Field(default=None, description="empty: each product's own price_fen")
    monthly_cap_fen: int | None = None
    quota_units: int | None = None
    quota_period: str | None = None
    rate_per_second: float
    burst: Int4


class PlanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str = Field(min_length=1, max_length=MAX_NAME)
    institution_id: int | None
    free_units: int
    free_period: str
    unit_price_fen: int | None
    monthly_cap_fen: int | None
    quota_units: int | None
    quota_period: str | None
    rate_per_second: float
    burst: int
    created_at: datetime


class UsageDayOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    institution_id: int
    product_id: str
    day: date = Field(description="Asia/Shanghai calendar day")
    calls: int
    units: int
    free_units: int
    charged_fen: int


class UsageOut(BaseModel):
    since: datetime
    until: datetime
    days: list[UsageDayOut]
    units: int
    free_units: int
    charged_fen: int
