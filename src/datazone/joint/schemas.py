"""Joint statistics and modeling request and response models (docs/joint-modeling.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import RequestBody
from datazone.purposes import Purpose

PRODUCT_ID = r"^[a-z][a-z0-9-]{1,62}$"
FEATURE = r"^[a-z][a-z0-9_]{1,62}$"
Feature = Annotated[str, Field(pattern=FEATURE)]


class JobIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["stats", "train"]
    product: Annotated[str, Field(pattern=PRODUCT_ID)]
    purpose: Purpose
    features: Annotated[list[Feature], Field(min_length=1, max_length=64)]
    sample: Annotated[
        list[Annotated[str, Field(max_length=32)]],
        Field(min_length=1, max_length=200_000, description="the sample's USCCs; their order is the rows' order"),
    ]
    # statistics
    bins: Annotated[int, Field(ge=2, le=50)] = 10
    edges: dict[Feature, Annotated[list[float], Field(min_length=1, max_length=49)]] | None = Field(
        default=None, description="declared bin edges per feature (strictly increasing); others are binned by quantile"
    )
    grouped: Annotated[list[Feature], Field(max_length=64)] = Field(
        default_factory=list, description="features whose counts, sums and means are grouped by label and segment"
    )
    segments: Annotated[int, Field(ge=0, le=16)] = 0
    public_key: Annotated[str | None, Field(max_length=100_000)] = Field(
        default=None, description="your HEU (Okamoto-Uchiyama) public key, base64 of its own serialization"
    )
    # training
    peer_address: Annotated[str | None, Field(min_length=3, max_length=300)] = None
    institution_certificate_pem: Annotated[str | None, Field(max_length=20_000)] = None
    own_features: Annotated[int, Field(ge=0, le=64)] = 0
    # the defaults are the engine's (privacy/joint_model.py TrainParams), tuned on 100,000 x 40
    epochs: Annotated[int, Field(ge=1, le=100)] = 3
    batch_size: Annotated[int, Field(ge=16, le=65_536)] = 8192
    learning_rate: Annotated[float, Field(gt=0, le=100)] = 2.0
    l2: Annotated[float, Field(ge=0, le=10)] = 0.0
    sigmoid: Literal["seg3", "t1"] = Field(
        default="seg3", description="the sigmoid's approximation: clip(0.5 + z/4, 0, 1) or 0.5 + z/4"
    )
    scorecard: bool = False
    stats_job: Annotated[str | None, Field(max_length=80)] = None


class Progress(BaseModel):
    phase: str | None
    done: int
    total: int


class JobOut(BaseModel):
    job_id: str
    kind: Literal["stats", "train"]
    product: str
    purpose: str
    status: Literal["receiving", "queued", "running", "succeeded", "failed", "expired"]
    reason: str | None
    sample_size: int
    features: list[str]
    charged_fen: int
    created_at: datetime
    expires_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    columns_expected: list[str]
    columns_received: list[str]
    zone_address: str | None
    peer_address: str | None
    zone_certificate_pem: str | None
    link_timeout_s: float | None
    ticket: str | None = Field(default=None, description="a training job's link ticket, shown once, at creation")


class JobsOut(BaseModel):
    jobs: list[JobOut]


class FeatureOut(BaseModel):
    name: str
    description: str
    min: int
    max: int
    missing: int
    grade: int


class FeaturesOut(BaseModel):
    product: str
    features: list[FeatureOut]


class BinnedFeature(BaseModel):
    name: str
    edges: list[float]
    totals: list[int]
    positives: str = Field(description="base64 of an HEU ciphertext array: the labels summed per bin")


class GroupedFeature(BaseModel):
    name: str
    count: int
    sum: int
    label_sum: str
    segment_counts: str | None = Field(description="base64 ciphertext array: each segment's count")
    segment_sums: str | None = Field(description="base64 ciphertext array: each segment's sum of the feature")


class Merged(BaseModel):
    feature: str
    from_bins: int
    to_bins: int


class ResultOut(BaseModel):
    job_id: str
    sample_size: int
    found: int
    features: list[BinnedFeature]
    grouped: list[GroupedFeature]
    merged: list[Merged]
