from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from datazone.limits import MAX_LIST, MAX_REASON, Int4, RequestBody


class ContractIn(RequestBody):
    """Purposes and products are checked by the service so that every problem is listed at once."""

    model_config = ConfigDict(extra="forbid")

    institution_id: int
    purposes: list[str] = Field(max_length=MAX_LIST)
    products: list[str] = Field(max_length=MAX_LIST)
    clearance: int = Field(default=2, description="fields of grade <= clearance are shown in clear (1..4)")
    valid_from: AwareDatetime
    valid_to: AwareDatetime
    max_batch: Int4 = 1000
    psi_max_set: Int4 | None = Field(
        default=None, description="the largest set a PSI may send; default: each PSI product's own max_set"
    )
    scoring_max_batch: Int4 | None = Field(
        default=None,
        description="the most enterprises one scoring job may hold; default: each scoring product's max_batch",
    )
    plan_id: str | None = Field(
        default=None, description="a public plan or the institution's own; default: public-standard"
    )


class ContractOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    institution_id: int
    purposes: list[str]
    products: list[str]
    clearance: int
    valid_from: datetime
    valid_to: datetime
    status: str
    max_batch: int
    psi_max_set: int | None
    scoring_max_batch: int | None
    plan_id: str
    created_by: int
    created_at: datetime
    status_changed_at: datetime | None
    status_reason: str | None


class StatusChangeIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_REASON)
