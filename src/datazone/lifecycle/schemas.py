"""Requests and answers of the lifecycle API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from datazone.dataset.schemas import SLUG
from datazone.limits import MAX_LIST, RequestBody
from datazone.purposes import Purpose
from datazone.supplier.schemas import Attachment

Reason = Annotated[str, Field(min_length=1, max_length=2000, description="why: recorded with the transition")]


class TransitionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    subject_type: str
    subject_id: str
    from_state: str | None
    to_state: str
    by_name: str
    reason: str
    at: datetime


class ReasonIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


# --- demands ----------------------------------------------------------------------------------


class DemandIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, Field(min_length=1, max_length=300)]
    description: Annotated[str, Field(max_length=10_000)] = ""
    purposes: list[Purpose] = Field(default_factory=list, max_length=MAX_LIST)
    wanted_fields: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=MAX_LIST
    )
    wanted_departments: list[Annotated[str, Field(pattern=SLUG)]] = Field(default_factory=list, max_length=MAX_LIST)


class FulfilIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    dataset_ids: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    product_id: str | None = None


class DemandOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    description: str
    purposes: list[str]
    wanted_fields: list[str]
    wanted_departments: list[str]
    state: str
    filed_by_name: str
    institution_id: int | None
    fulfilled_dataset_ids: list[str]
    fulfilled_product_id: str | None
    created_at: datetime
    updated_at: datetime


# --- suppliers ----------------------------------------------------------------------------------


class SupplierApplicationIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=SLUG)]
    name: Annotated[str, Field(min_length=1)]
    name_en: str = ""
    kind: Literal["department", "other"] = "department"
    attachments: list[Attachment] = Field(
        default_factory=list,
        max_length=MAX_LIST, description="qualification certificate, security assessment, ..."
    )
    reason: Reason = "applied for admission"


class SupplierDecisionIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_LIST)


class ScorecardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    supplier_id: str
    admission_status: str
    since: datetime
    until: datetime
    datasets: int
    datasets_admitted: int
    versions: int
    mean_completeness: float | None
    mean_validity: float | None
    on_time_share: float | None
    rows_rejected: int
    failed_runs: int
    products: list[str]
    usage_calls: int
    usage_entities: int
    mean_rating: float | None
    score: float | None = Field(description="0-100; weights in `weights` (components without data left out)")
    weights: dict[str, float]


# --- datasets ----------------------------------------------------------------------------------


class AdmissionIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["admit", "reject"]
    reason: Reason
    override: bool = Field(default=False, description="admit although the sample fails; say why in reason")
    run_id: int | None = Field(
        default=None, description="review the version this run brought; default latest"
    )


class DatasetReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: str
    version: int | None
    run_id: int | None
    decision: str
    passed: bool
    override: bool
    reason: str
    figures: dict[str, Any]
    failures: list[dict[str, Any]]
    by_name: str
    at: datetime


class DeprecateIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    successor: Annotated[str, Field(min_length=1, description="the dataset that replaces this one")]
    reason: Reason


class DatasetStateOut(BaseModel):
    dataset_id: str
    admission_state: str
    successor_id: str | None


class DatasetQualityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    dataset_id: str
    version: int
    rows: int
    rows_received: int
    rows_rejected: int
    duplicate_keys: int
    completeness: dict[str, float]
    completeness_overall: float
    validity: float
    on_time: bool
    age_hours: float
    lag_hours: float
    version_at: datetime
    evaluated_at: datetime


# --- ratings and usage -----------------------------------------------------------------------------


class RatingIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    score: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str, Field(max_length=2000)] = ""
    period: Annotated[str | None, Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")] = None


class RatingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: str
    period: str
    score: int
    comment: str
    updated_at: datetime


class RatingSummaryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: str
    count: int
    mean: float | None
    by_score: dict[int, int]
    by_period: dict[str, float]


class UsageVolumeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: str
    day: date
    calls: int
    entities: int
    refused: int
