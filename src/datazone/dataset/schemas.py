"""Dataset specs: what a department sends and how the zone validates and stores it.

A spec is declared in YAML (one document per dataset) and applied with
`datazone dataset apply FILE`. The same pydantic model validates the YAML, the
HTTP API's answers and the ingest pipeline's configuration, so there is one
definition of what a valid spec is.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datazone.lifecycle.schemas import Reason
from datazone.limits import RequestBody

IDENT = r"^[a-z][a-z0-9_]{1,62}$"
SLUG = r"^[a-z][a-z0-9-]{1,62}$"
SHANGHAI = ZoneInfo("Asia/Shanghai")


class FieldType(StrEnum):
    string = "string"
    integer = "integer"
    decimal = "decimal"
    date = "date"
    boolean = "boolean"
    enum = "enum"
    uscc = "uscc"


class Masking(StrEnum):
    """How a field is desensitized in product answers (applied by one engine, later issues)."""

    none = "none"
    person_name = "person_name"
    id_number = "id_number"
    phone = "phone"
    address = "address"
    amount_band = "amount_band"
    redact = "redact"


class Frequency(StrEnum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


class SourceFormat(StrEnum):
    csv = "csv"
    xlsx = "xlsx"
    jsonl = "jsonl"


class Mode(StrEnum):
    snapshot = "snapshot"
    incremental = "incremental"


ENCODINGS = ("utf-8", "utf-8-sig", "gb18030", "gbk")


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=IDENT)]
    type: FieldType
    required: bool = False
    headers: list[str] = Field(
        default_factory=list, description="column headers (Chinese) that map to this field"
    )
    grade: Annotated[int, Field(ge=1, le=5)] = 2
    masking: Masking = Masking.none
    description: str = ""
    # enum: canonical values, and aliases as they appear in department files
    values: dict[str, list[str]] | None = None
    # string: maximum length in characters
    max_length: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _enum_has_values(self) -> FieldSpec:
        if self.type is FieldType.enum and not self.values:
            raise ValueError(f"field {self.name!r} is an enum and needs 'values'")
        if self.type is not FieldType.enum and self.values is not None:
            raise ValueError(f"field {self.name!r} has 'values' but is not an enum")
        return self

    def accepted_headers(self) -> list[str]:
        return [self.name, *self.headers]


class DirectorySource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["directory"] = "directory"
    # a glob; relative paths are taken from DATAZONE_HOME/drop
    path: str
    # after a successful run the file is moved to <dir>/processed so it is never loaded twice
    archive: bool = True


class UrlSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["url"] = "url"
    url: Annotated[str, Field(pattern=r"^https?://")]
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    headers: dict[str, str] = Field(default_factory=dict)


class DeletionMarker(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # a column of the file (header or field name) that is not itself a field
    column: str
    headers: list[str] = Field(default_factory=list)
    values: list[str] = Field(min_length=1, description="values of the column that mean 'delete this record'")


class QualityThresholds(BaseModel):
    """What data admission and evaluation require of a delivery (defaults apply when absent).

    Required fields must always be complete; `fields` sets the floor per optional field,
    for fields sparse by nature (a removal date, a gas reading of a firm with no gas meter)."""

    model_config = ConfigDict(extra="forbid")

    min_completeness: Annotated[float, Field(ge=0, le=1)] = 0.95
    min_validity: Annotated[float, Field(ge=0, le=1)] = 0.99
    fields: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=IDENT)]
    name: str
    name_en: str = ""
    description: str = ""
    department: Annotated[str, Field(pattern=SLUG)]
    entity_key: str = Field(description="the field holding the enterprise's USCC")
    key: list[str] | None = Field(
        default=None, description="fields that identify one record; default: the entity key alone"
    )
    fields: list[FieldSpec] = Field(min_length=1)
    source: DirectorySource | UrlSource = Field(discriminator="kind")
    format: SourceFormat = SourceFormat.csv
    encoding: Literal["utf-8", "utf-8-sig", "gb18030", "gbk"] | None = None
    sheet: str | None = None
    mode: Mode = Mode.snapshot
    deletion_marker: DeletionMarker | None = None
    frequency: Frequency = Frequency.daily
    schedule: str | None = Field(default=None, description="cron expression, Asia/Shanghai")
    reject_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.0
    ignore_unknown_columns: bool = False
    quality: QualityThresholds | None = None

    @field_validator("schedule")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronTrigger.from_crontab(value, timezone=SHANGHAI)
            except ValueError as exc:
                raise ValueError(f"schedule {value!r} is not a valid 5-field cron expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        problems: list[str] = []
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"fields declared twice: {', '.join(dupes)}")
        reserved = [n for n in names if n.startswith("_")]
        if reserved:
            problems.append(f"field names may not start with '_': {', '.join(reserved)}")
        by_name = {f.name: f for f in self.fields}
        ek = by_name.get(self.entity_key)
        if ek is None:
            problems.append(f"entity_key {self.entity_key!r} is not a declared field")
        elif ek.type is not FieldType.uscc or not ek.required:
            problems.append(f"entity_key {self.entity_key!r} must be a required field of type uscc")
        for k in self.record_key():
            if k not in by_name:
                problems.append(f"key field {k!r} is not a declared field")
            elif not by_name[k].required:
                problems.append(f"key field {k!r} must be required")
        if self.key is not None and self.entity_key not in self.key:
            problems.append("key must include the entity_key, so zone tables can be split by enterprise")
        seen: dict[str, str] = {}
        for f in self.fields:
            for h in f.accepted_headers():
                other = seen.get(normalize_header(h))
                if other is not None and other != f.name:
                    problems.append(f"header {h!r} maps to both {other!r} and {f.name!r}")
                seen[normalize_header(h)] = f.name
        if self.mode is Mode.incremental and self.deletion_marker is None:
            problems.append("incremental mode needs a deletion_marker")
        if self.mode is Mode.snapshot and self.deletion_marker is not None:
            problems.append("deletion_marker only applies to incremental mode")
        if self.deletion_marker is not None:
            for h in [self.deletion_marker.column, *self.deletion_marker.headers]:
                if normalize_header(h) in seen:
                    problems.append(f"deletion marker column {h!r} is also a field header")
        if self.sheet is not None and self.format is not SourceFormat.xlsx:
            problems.append("sheet only applies to the xlsx format")
        if self.quality is not None:
            unknown = sorted(set(self.quality.fields) - set(names))
            if unknown:
                problems.append(f"quality.fields names undeclared fields: {', '.join(unknown)}")
            strict = sorted(n for n in self.quality.fields if n in by_name and by_name[n].required)
            if strict:
                problems.append(f"quality.fields cannot relax required fields: {', '.join(strict)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def record_key(self) -> list[str]:
        return list(self.key) if self.key else [self.entity_key]

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def next_fire_times(self, after: datetime, before: datetime) -> list[datetime]:
        """Scheduled times in (after, before], for catching up after downtime."""
        if self.schedule is None:
            return []
        trigger = CronTrigger.from_crontab(self.schedule, timezone=SHANGHAI)
        out: list[datetime] = []
        prev: datetime | None = None
        t = trigger.get_next_fire_time(prev, after)
        while t is not None and t <= before:
            if t > after:
                out.append(t)
            prev = t
            t = trigger.get_next_fire_time(prev, t)
            if len(out) > 10_000:
                break
        return out


_WS = re.compile(r"\s+")


def normalize_header(header: str) -> str:
    """Headers as departments write them: stray spaces, full-width parentheses, BOMs."""
    h = header.replace("\ufeff", "").replace("（", "(").replace("）", ")")
    return _WS.sub("", h).lower()


def redacted(spec: DatasetSpec) -> dict[str, object]:
    """The spec as shown through the API: pull credentials and URL queries removed."""
    data = spec.model_dump(mode="json")
    src = data["source"]
    if src.get("kind") == "url":
        src["url"] = src["url"].split("?", 1)[0]
        src["headers"] = {k: "***" for k in src.get("headers", {})}
    return data


class DatasetVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    run_id: int
    rows_total: int
    rows_loaded: int
    rows_deleted: int
    source: str
    source_sha256: str
    created_at: datetime


class DatasetOut(BaseModel):
    id: str
    name: str
    name_en: str
    department: str
    frequency: Frequency
    schedule: str | None
    format: SourceFormat
    mode: Mode
    current_version: int | None
    current_rows: int
    admission_state: str = Field(description="intake, under_review, admitted, rejected, deprecated or retired")
    successor_id: str | None = Field(default=None, description="the dataset that replaces a deprecated one")
    updated_at: datetime
    spec: dict[str, object]


# --- admission, retirement and quality ----------------------------------------------------------------------------------


class AdmissionIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["admit", "reject"]
    reason: Reason
    override: bool = Field(default=False, description="admit although the sample fails; say why in reason")
    run_id: int | None = Field(
        default=None, description="review the version this run brought; default latest"
    )


class DatasetReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: str
    version: int | None
    run_id: int | None
    decision: str
    passed: bool
    override: bool
    reason: str
    figures: dict[str, Any]
    failures: list[dict[str, Any]]
    by_name: str
    at: datetime


class DeprecateIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    successor: Annotated[str, Field(min_length=1, description="the dataset that replaces this one")]
    reason: Reason


class DatasetStateOut(BaseModel):
    dataset_id: str
    admission_state: str
    successor_id: str | None


class DatasetQualityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    dataset_id: str
    version: int
    rows: int
    rows_received: int
    rows_rejected: int
    duplicate_keys: int
    completeness: dict[str, float]
    completeness_overall: float
    validity: float
    on_time: bool
    age_hours: float
    lag_hours: float
    version_at: datetime
    evaluated_at: datetime
