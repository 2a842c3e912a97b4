"""Anonymous-query request and response models."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import RequestBody
from datazone.privacy.anonymous_query import MAX_PREFIX_BITS
from datazone.purposes import Purpose

# the largest max_queries a product may declare (AnonymousSpec); a product's own limit is checked by the service
MAX_QUERIES = 1000


class ParametersOut(BaseModel):
    """What an institution needs before asking: the live table's bucket parameters."""

    product: str
    answer: Literal["existence", "full"]
    k: int
    prefix_bits: int
    buckets: int
    smallest_bucket: int
    candidates: int
    table: int
    epoch: int
    built_at: datetime
    as_of: date
    data_versions: dict[str, int | None]
    max_queries: int
    price_fen: int
    masking: dict[str, str] = Field(
        default_factory=dict,
        description="full answers: per output field, clear, withheld (opens as null) or the masking method",
    )


class QueryIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    bucket: Annotated[int, Field(ge=0, description="the first prefix_bits bits of the enterprise's bucket hash")]
    # 33 bytes are 44 base64 characters; a little room so a wrong length is named, not cut off
    point: Annotated[str, Field(max_length=200, description="the blinded OPRF point, standard base64")]


class QueriesIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    purpose: Purpose
    prefix_bits: Annotated[int, Field(ge=0, le=MAX_PREFIX_BITS, description="the prefix length the buckets use")]
    queries: Annotated[list[QueryIn], Field(min_length=1, max_length=MAX_QUERIES)]


class AnswerOut(BaseModel):
    bucket: int
    point: str
    candidates: int
    entries: str


class QueriesOut(BaseModel):
    product: str
    table: int
    epoch: int
    prefix_bits: int
    k: int
    charged_fen: int
    answers: list[AnswerOut]


class TableOut(BaseModel):
    """The operator's view of a build."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: str
    epoch: int
    data_key: str
    answer: str
    k: int
    prefix_bits: int | None
    clearance: int
    state: str
    candidates: int | None
    members: int | None
    smallest_bucket: int | None
    size_bytes: int | None
    error: str | None
    seconds: float | None
    created_at: datetime
    ready_at: datetime | None
    superseded_at: datetime | None
