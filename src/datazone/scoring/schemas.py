"""Secure scoring request and response models.

A model registration is the JSON document `privacy.scoring.encrypt_model` writes; the service
checks it in full (listing every problem), so the route takes it as a plain JSON object.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import RequestBody

MODEL_ID = r"^mdl_[A-Za-z0-9_-]{8,36}$"
JOB_ID = r"^sjb_[A-Za-z0-9_-]{8,36}$"
ModelState = Literal["pending_review", "approved", "rejected", "retired"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]


class ModelFeatureOut(BaseModel):
    name: str
    # a scorecard's bin edges (public); absent for a logistic model
    bins: list[float] | None = None


class ModelOut(BaseModel):
    """A registered model as the zone keeps it: never a ciphertext, never a weight."""

    id: str
    institution_id: int
    name: str
    product: str
    purpose: str
    kind: Literal["logistic", "scorecard"]
    scale: int
    description: str
    state: ModelState
    features: list[ModelFeatureOut]
    key_fingerprint: str
    key_bits: int
    score_bits: int
    slot_bits: int
    slots: int
    resolution: int
    created_at: datetime
    reviewed_at: datetime | None
    review_reason: str | None
    retired_at: datetime | None
    retire_reason: str | None


class ReviewIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class RetireIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class ScoreIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(pattern=MODEL_ID)]
    # checked by the service (GB 32100 check character), so a bad code gets the same problem everywhere
    uscc: Annotated[str, Field(min_length=1, max_length=32)]


class ScoreOut(BaseModel):
    model: str
    uscc: str
    found: Literal[True]
    # one packed ciphertext holding the score in slot 0: open with privacy.scoring.open_scores
    ciphertext: str
    count: Literal[1]
    slot_bits: int
    slots: int
    resolution: int
    scale: int
    kind: Literal["logistic", "scorecard"]
    as_of: str
    data_versions: dict[str, int | None]
    charged_fen: int


class JobIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(pattern=MODEL_ID)]
    usccs: Annotated[list[Annotated[str, Field(max_length=32)]], Field(min_length=1, max_length=1_000_000)]


class JobOut(BaseModel):
    id: str
    model: str
    product: str
    purpose: str
    status: JobStatus
    total: int
    found: int
    chunk_size: int
    chunks: int
    chunks_done: int
    # enterprises of the job whose chunk is computed
    done: int
    charged_fen: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    chunks_url: str


class ChunkOut(BaseModel):
    job: str
    model: str
    index: int
    usccs: list[str]
    found: list[bool]
    # the found enterprises' scores, in order, `slots` to a ciphertext
    ciphertexts: list[str]
    count: int
    slot_bits: int
    slots: int
    resolution: int
    as_of: str
    data_versions: dict[str, int | None]
