"""Request and response bodies of the client registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import MAX_NAME, MAX_REASON, RequestBody


class ClientCreate(RequestBody):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME, description="what the application is, e.g. 'loan-origination'")
    auth_method: Literal["client_secret_basic", "private_key_jwt"] = "client_secret_basic"
    jwks: dict[str, Any] | None = Field(
        default=None, description="the client's PUBLIC keys, for private_key_jwt"
    )


class ClientRevoke(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=MAX_REASON)


class ClientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client_id: str
    institution_id: int
    name: str
    token_endpoint_auth_method: str
    jwks: dict[str, Any] | None = None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoke_reason: str | None = None


class ClientCreated(ClientOut):
    # shown once: only its hash is kept
    client_secret: str | None = None
