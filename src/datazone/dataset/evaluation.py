"""Evaluation of delivered data: quality figures per dataset version, computed by the
scheduler hourly (and by `datazone lifecycle evaluate`), read by the API, the dashboards and
the supplier scorecard. The arithmetic is in `quality`; this module reads and stores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from datazone.dataset import quality, service
from datazone.dataset.models import DatasetQuality
from datazone.errors import Forbidden
from datazone.ingest import service as ingest_service
from datazone.limits import check_figure_limit, day_window
from datazone.principal.models import Principal
from datazone.principal.service import a_kind


def _version_figures(
    session: Session, *, dataset_id: str, version: int, version_at: datetime, run_id: int,
    frequency: str, next_at: datetime | None, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    profile = service.profile_version(session, dataset_id=dataset_id, version=version)
    run = ingest_service.get_run(session, run_id=run_id)
    t = quality.timeliness(frequency=frequency, version_at=version_at, until=next_at or now)
    return {
        "dataset_id": dataset_id,
        "version": version,
        "rows": profile.rows,
        "rows_received": run.rows_read,
        "rows_rejected": run.rows_rejected,
        "duplicate_keys": profile.duplicate_keys,
        "completeness": quality.completeness(profile.non_null, profile.rows),
        "completeness_overall": quality.overall_completeness(profile.non_null, profile.rows),
        "validity": quality.validity(run.rows_read, run.rows_rejected),
        "on_time": t.on_time,
        "age_hours": t.age_hours,
        "lag_hours": t.lag_hours,
        "version_at": version_at,
        "evaluated_at": now,
    }


@dataclass(frozen=True)
class EvaluationResult:
    evaluated: list[tuple[str, int]]  # (dataset, version) figures computed
    refreshed: list[tuple[str, int]]  # timeliness updated


def evaluate_datasets(
    session: Session, *, now: datetime, dataset_ids: Sequence[str] | None = None
) -> EvaluationResult:
    """Compute figures for versions that have none, and refresh timeliness where it can still change.

    A version's timeliness is final once a newer version exists; the latest version's is
    measured against `now`. Safe to run from two schedulers at once: each row is upserted.
    Retired datasets are no longer evaluated.
    """
    evaluated: list[tuple[str, int]] = []
    refreshed: list[tuple[str, int]] = []
    for ds in service.list_datasets(session):
        if dataset_ids is not None and ds.id not in dataset_ids:
            continue
        if ds.admission_state == "retired" or ds.current_version is None:
            continue
        frequency = service.spec_of(ds).frequency.value
        versions = sorted(service.list_versions(session, dataset_id=ds.id), key=lambda v: v.version)
        have = {
            q.version: q
            for q in session.scalars(sa.select(DatasetQuality).where(DatasetQuality.dataset_id == ds.id))
        }
        for i, v in enumerate(versions):
            next_at = versions[i + 1].created_at if i + 1 < len(versions) else None
            existing = have.get(v.version)
            if existing is None:
                values = _version_figures(
                    session, dataset_id=ds.id, version=v.version, version_at=v.created_at, run_id=v.run_id,
                    frequency=frequency, next_at=next_at, now=now,
                )  # fmt: skip
                stmt = pg_insert(DatasetQuality).values(**values)
                session.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[DatasetQuality.dataset_id, DatasetQuality.version],
                        set_={k: stmt.excluded[k] for k in values if k not in ("dataset_id", "version")},
                    )
                )
                evaluated.append((ds.id, v.version))
            else:
                # the latest version ages with `now`; an older one changes only once, when its
                # successor arrives after it was first evaluated
                t = quality.timeliness(frequency=frequency, version_at=v.created_at, until=next_at or now)
                if next_at is None or (existing.on_time, existing.age_hours) != (t.on_time, t.age_hours):
                    existing.on_time, existing.age_hours, existing.lag_hours = (
                        t.on_time,
                        t.age_hours,
                        t.lag_hours,
                    )
                    existing.evaluated_at = now
                    refreshed.append((ds.id, v.version))
    session.flush()
    return EvaluationResult(evaluated, refreshed)


def dataset_quality(session: Session, *, dataset_id: str) -> list[DatasetQuality]:
    service.get_dataset(session, dataset_id=dataset_id)
    q = (
        sa.select(DatasetQuality)
        .where(DatasetQuality.dataset_id == dataset_id)
        .order_by(DatasetQuality.version.desc())
    )
    return list(session.scalars(q))


@dataclass(frozen=True)
class VersionQuality:
    """The quality figures of one dataset version as evaluated (see `quality` for their meaning)."""

    dataset_id: str
    version: int
    version_at: datetime
    rows: int
    rows_received: int
    rows_rejected: int
    duplicate_keys: int
    completeness_overall: float
    validity: float
    on_time: bool
    lag_hours: float
    evaluated_at: datetime


def quality_per_version(
    session: Session,
    *,
    viewer: Principal,
    days: int,
    last_day: date | None = None,
    dataset_id: str | None = None,
    limit: int = 1000,
) -> list[VersionQuality]:
    """The evaluated quality of every version that arrived in the `days` Shanghai days ending with
    `last_day` (default today), by dataset then version, at most `limit` (1..1000): the operator's
    every dataset (or `dataset_id`), a department its own. One query."""
    window = day_window(days=days, last_day=last_day)
    check_figure_limit(limit)
    q = (
        sa.select(DatasetQuality)
        .where(DatasetQuality.version_at >= window.since, DatasetQuality.version_at < window.until)
        .order_by(DatasetQuality.dataset_id, DatasetQuality.version)
        .limit(limit)
    )
    if viewer.kind == "operator" or (viewer.kind == "department" and viewer.supplier_id):
        q = q.where(DatasetQuality.dataset_id.in_(service.admission_readable_ids(viewer)))
    else:
        raise Forbidden(f"data quality is seen by the operator and the supplying department, not {a_kind(viewer.kind)}")
    if dataset_id is not None:
        q = q.where(DatasetQuality.dataset_id == dataset_id)
    return [
        VersionQuality(
            dataset_id=r.dataset_id,
            version=r.version,
            version_at=r.version_at,
            rows=r.rows,
            rows_received=r.rows_received,
            rows_rejected=r.rows_rejected,
            duplicate_keys=r.duplicate_keys,
            completeness_overall=r.completeness_overall,
            validity=r.validity,
            on_time=r.on_time,
            lag_hours=r.lag_hours,
            evaluated_at=r.evaluated_at,
        )
        for r in session.scalars(q)
    ]


def quality_between(
    session: Session, *, dataset_ids: Sequence[str], since: datetime, until: datetime
) -> list[DatasetQuality]:
    """The evaluations of the datasets' versions that arrived in [since, until), for scorecards."""
    if not dataset_ids:
        return []
    q = sa.select(DatasetQuality).where(
        DatasetQuality.dataset_id.in_(list(dataset_ids)),
        DatasetQuality.version_at >= since,
        DatasetQuality.version_at < until,
    )
    return list(session.scalars(q))
