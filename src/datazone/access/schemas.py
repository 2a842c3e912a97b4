from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import RequestBody
from datazone.purposes import Purpose

MAX_BATCH = 1000


class MaskingOut(BaseModel):
    clearance: int = Field(description="the contract's clearance: fields of grade up to it are in clear")
    fields: dict[str, str] = Field(description="per output field: clear, withheld, or the masking method")


class ServedBy(BaseModel):
    id: str
    requested: str = Field(description="the product asked for; differs when a retired product was switched")
    state: str


class EnterpriseAnswer(BaseModel):
    uscc: str
    found: bool
    answer: dict[str, Any] | None


class ProductAnswerOut(BaseModel):
    """One product answer: what was computed, from which data versions, under which masking."""

    product: ServedBy
    purpose: Purpose
    as_of: date
    computed_at: datetime
    data_versions: dict[str, int | None]
    masking: MaskingOut
    contract_id: int
    grant_ids: list[str]
    charged_fen: int = Field(description="what this call cost, in fen (0 for free products and free units)")
    uscc: str
    answer: dict[str, Any]


class BatchIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    purpose: Purpose
    usccs: Annotated[list[Annotated[str, Field(max_length=32)]], Field(min_length=1, max_length=MAX_BATCH)]


class BatchAnswerOut(BaseModel):
    product: ServedBy
    purpose: Purpose
    as_of: date
    computed_at: datetime
    data_versions: dict[str, int | None]
    masking: MaskingOut
    contract_id: int
    grant_ids: list[str]
    charged_fen: int = Field(description="what this call cost, in fen: enterprises not found are not billed")
    results: list[EnterpriseAnswer]
