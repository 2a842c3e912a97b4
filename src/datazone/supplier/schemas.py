from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from datazone.dataset.schemas import SLUG
from datazone.lifecycle.schemas import Reason
from datazone.limits import MAX_LIST, RequestBody


class SupplierSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=SLUG)]
    name: Annotated[str, Field(min_length=1)]
    name_en: str = ""
    kind: Literal["department", "other"] = "department"


class Attachment(RequestBody):
    """A reference to a document an admission is decided on; the document itself stays where it is."""

    model_config = ConfigDict(extra="forbid")

    kind: Annotated[
        str,
        Field(
            min_length=1,
            max_length=63,
            description="e.g. qualification_certificate, security_assessment, business_license",
        ),
    ]
    reference: Annotated[str, Field(min_length=1, max_length=1000, description="document id or URL")]
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None


class SupplierOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    name_en: str
    kind: str
    admission_status: str
    created_at: datetime


class SupplierAdmissionOut(SupplierOut):
    """A supplier with the documents its admission was decided on (operator and the supplier itself)."""

    attachments: list[dict[str, Any]] = Field(default_factory=list)


# --- admission and scorecard ----------------------------------------------------------------------------------


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
