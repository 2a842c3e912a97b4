"""What the audit API answers, and the published roots a verifier reads back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HEX32 = r"^[0-9a-f]{64}$"


class PublishedRoot(BaseModel):
    """One sealed block's header as published (`GET /v1/audit/blocks`, `datazone audit roots`)."""

    model_config = ConfigDict(extra="ignore")

    height: int = Field(ge=0)
    prev_hash: str = Field(pattern=_HEX32)
    merkle_root: str = Field(pattern=_HEX32)
    block_hash: str = Field(pattern=_HEX32)
    entry_count: int = Field(ge=1)
    first_entry_id: int = Field(ge=1)
    last_entry_id: int = Field(ge=1)
    sealed_at: datetime

    @field_validator("sealed_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("sealed_at needs a timezone offset")
        return value


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_id: int | None
    actor_name: str
    actor_kind: str
    action: str
    object_type: str
    object_id: str
    purpose: str | None
    entity_count: int
    entities: list[str]
    outcome: str
    reason: str | None
    detail: dict[str, Any]
    supplier_ids: list[str]
    institution_id: int | None
    block_height: int | None
    block_position: int | None


class UseOut(BaseModel):
    """One use of data: who, when, which product, how many entities, for what."""

    entry_id: int
    at: datetime
    institution_id: int | None
    institution: str | None
    product_id: str
    entity_count: int
    purpose: str | None
    outcome: str
    reason: str | None
    supplier_ids: list[str]


class PathStepOut(BaseModel):
    side: Literal["left", "right"]
    hash: str


class InclusionProofOut(BaseModel):
    entry_id: int
    entry: dict[str, Any]
    leaf_hash: str
    position: int
    audit_path: list[PathStepOut]
    block: PublishedRoot


class ChainReportOut(BaseModel):
    ok: bool
    blocks_checked: int
    entries_checked: int
    unsealed_entries: int
    roots_checked: int
    first_bad_block: int | None
    problem: str | None
