"""PSI request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import RequestBody
from datazone.purposes import Purpose

PRODUCT_ID = r"^[a-z][a-z0-9-]{1,62}$"


class SessionIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    product: Annotated[str, Field(pattern=PRODUCT_ID)]
    purpose: Purpose
    set_size: Annotated[int, Field(ge=1, le=100_000_000, description="how many enterprises the institution will send")]
    labeled: bool = Field(default=False, description="also receive the product's fields for matched enterprises")


class SessionOut(BaseModel):
    session_id: str
    product: str
    purpose: str
    epoch: int
    slice: str
    result: Literal["intersection", "size"]
    labeled: bool
    set_size: int
    items_received: int
    max_chunk_items: int
    created_at: datetime
    expires_at: datetime
    charged_fen: int
    setup_url: str
    labels_url: str | None
    chunks_url: str
    chunks_done: list[int]
    state: Literal["open", "expired"]


class RotateIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class EpochOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    retired_at: datetime | None


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: str
    kind: str
    epoch: int
    slice_key: str
    clearance: int
    state: str
    items: int | None
    size_bytes: int | None
    sha256: str | None
    seconds: float | None
    error: str | None
    created_at: datetime
    ready_at: datetime | None


class JobIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    product: Annotated[str, Field(pattern=PRODUCT_ID)]
    purpose: Purpose
    set_size: Annotated[int, Field(ge=1, le=100_000_000)]
    peer_address: Annotated[str, Field(min_length=3, max_length=300, description="host:port where your engine side listens")]
    protocol: Literal["auto", "rr22", "ecdh", "kkrt", "unbalanced"] = "auto"
    institution_certificate_pem: Annotated[str | None, Field(max_length=20_000)] = Field(
        default=None, description="your link certificate (PEM): with it the link runs over mutual TLS"
    )
    have_cache: bool = Field(default=False, description="you already hold the unbalanced cache of this slice")


class JobOut(BaseModel):
    job_id: str
    product: str
    purpose: str
    status: Literal["queued", "running", "succeeded", "failed", "expired"]
    reason: str | None
    protocol: str
    set_size: int
    epoch: int
    slice: str
    zone_address: str
    peer_address: str
    cache_id: str | None
    link_timeout_s: float
    zone_certificate_pem: str | None
    charged_fen: int
    created_at: datetime
    expires_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    ticket: str | None = Field(default=None, description="shown once, when the job is created")
