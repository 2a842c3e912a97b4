from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from datazone.limits import MAX_LIST, MAX_REASON, MAX_REF, RequestBody


class ConsentIn(RequestBody):
    """One enterprise's consent. Fields are checked by the service, all items at once, so
    a batch gets every problem listed by index rather than the first one."""

    model_config = ConfigDict(extra="forbid")

    uscc: str = Field(max_length=32)
    purpose: str = Field(max_length=64)
    products: list[str] | None = Field(default=None, max_length=MAX_LIST, description="null: any product of your contract")
    valid_from: AwareDatetime
    valid_to: AwareDatetime
    evidence_ref: str = Field(max_length=MAX_REF, description="where the signed authorization letter is kept")
    evidence_sha256: str = Field(max_length=64, description="SHA-256 of the evidence, 64 lowercase hex characters")


class ConsentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    institution_id: int
    uscc: str = Field(max_length=32)
    purpose: str = Field(max_length=64)
    products: list[str] | None
    valid_from: datetime
    valid_to: datetime
    evidence_ref: str
    evidence_sha256: str
    created_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


class RevokeIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_REASON)
