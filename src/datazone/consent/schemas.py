from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class ConsentIn(BaseModel):
    """One enterprise's consent. Fields are checked by the service, all items at once, so
    a batch gets every problem listed by index rather than the first one."""

    model_config = ConfigDict(extra="forbid")

    uscc: str
    purpose: str
    products: list[str] | None = Field(default=None, description="null: any product of your contract")
    valid_from: AwareDatetime
    valid_to: AwareDatetime
    evidence_ref: str = Field(description="where the signed authorization letter is kept")
    evidence_sha256: str = Field(description="SHA-256 of the evidence, 64 lowercase hex characters")


class ConsentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    institution_id: int
    uscc: str
    purpose: str
    products: list[str] | None
    valid_from: datetime
    valid_to: datetime
    evidence_ref: str
    evidence_sha256: str
    created_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1)
