from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from datazone.limits import MAX_LIST, MAX_REASON, RequestBody


class GrantIn(RequestBody):
    """Purposes, datasets, products and institutions are checked by the service so that
    every problem is listed at once. The department is the caller's own."""

    model_config = ConfigDict(extra="forbid")

    department: str | None = Field(default=None, description="your department (the default)")
    datasets: list[str] = Field(max_length=MAX_LIST)
    purposes: list[str] = Field(max_length=MAX_LIST)
    products: list[str] | None = Field(default=None, max_length=MAX_LIST, description="null: any product")
    institutions: list[int] | None = Field(default=None, max_length=MAX_LIST, description="null: all institutions")
    valid_from: AwareDatetime
    valid_to: AwareDatetime


class GrantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    department: str
    datasets: list[str] = Field(max_length=MAX_LIST)
    purposes: list[str] = Field(max_length=MAX_LIST)
    products: list[str] | None
    institutions: list[int] | None
    valid_from: datetime
    valid_to: datetime
    created_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None
    status: str = Field(default="", description="live, upcoming, expired or revoked, as of the request")


class RevokeIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_REASON)
