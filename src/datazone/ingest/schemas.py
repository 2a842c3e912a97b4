from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class IngestRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: str
    status: str
    trigger: str
    requested_by: str
    scheduled_for: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    source: str | None
    source_sha256: str | None
    encoding: str | None
    version: int | None
    rows_read: int
    rows_loaded: int
    rows_unchanged: int
    rows_deleted: int
    rows_rejected: int
    error_code: str | None
    error: str | None
    note: str | None


class RejectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    line: int | None
    column: str | None
    reason: str
    value: str | None


class IngestReport(BaseModel):
    run: IngestRunOut
    rejects: list[RejectOut] = Field(description="the first rejects; the whole report is at rejects.csv")
    rejects_reported: int
