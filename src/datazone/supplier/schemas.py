from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from datazone.dataset.schemas import SLUG
from datazone.limits import RequestBody


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
