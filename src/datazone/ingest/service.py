"""Ingest runs: request, claim, list, report, and reap the stalled ones.

The heavy work (execute_run) is in pipeline.py and runs in the CLI, the scheduler
or a worker process, never in a request handler.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.dataset import service as dataset_service
from datazone.db import shanghai_date
from datazone.errors import Forbidden, NotFound
from datazone.ingest.models import IngestReject, IngestRun
from datazone.limits import check_figure_limit, day_window
from datazone.principal.models import Principal
from datazone.principal.service import a_kind


def request_run(
    session: Session,
    *,
    dataset_id: str,
    trigger: str,
    requested_by: str = "",
    file: str | None = None,
    by: Principal | None = None,
) -> IngestRun:
    """A run to do now; the caller executes it (CLI) or a scheduler/worker picks it up (API)."""
    ds = dataset_service.get_dataset(session, dataset_id=dataset_id)
    run = IngestRun(dataset_id=dataset_id, trigger=trigger, requested_by=requested_by, source_override=file)
    session.add(run)
    session.flush()
    audit_service.record(
        session,
        actor=by,
        actor_name=requested_by or trigger,
        action="ingest.request",
        object_type="dataset",
        object_id=dataset_id,
        supplier_ids=[ds.supplier_id],
        detail={"run_id": run.id, "trigger": trigger, "file": bool(file)},
    )
    return run


def claim_scheduled_run(session: Session, *, dataset_id: str, scheduled_for: datetime) -> IngestRun | None:
    """Claim the run for (dataset, scheduled time) once: None when someone already claimed it."""
    stmt = (
        pg_insert(IngestRun)
        .values(
            dataset_id=dataset_id, trigger="schedule", requested_by="scheduler", scheduled_for=scheduled_for
        )
        .on_conflict_do_nothing(constraint="uq_ingest_run_scheduled")
        .returning(IngestRun.id)
    )
    run_id = session.execute(stmt).scalar_one_or_none()
    return None if run_id is None else session.get(IngestRun, run_id)


def last_scheduled_for(session: Session, *, dataset_id: str) -> datetime | None:
    return session.scalar(
        sa.select(sa.func.max(IngestRun.scheduled_for)).where(IngestRun.dataset_id == dataset_id)
    )


def next_queued_run(session: Session) -> int | None:
    """The oldest run waiting to be executed, locked so two workers never take the same."""
    return session.scalar(
        sa.select(IngestRun.id)
        .where(IngestRun.status == "new")
        .order_by(IngestRun.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


def get_run(session: Session, *, run_id: int) -> IngestRun:
    run = session.get(IngestRun, run_id)
    if run is None:
        raise NotFound(f"no ingest run {run_id}")
    return run


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The runs the viewer may read, as a WHERE clause (every list and get of runs uses it): the
    operator every run, a department its own datasets' runs; anyone else none (403)."""
    if viewer.kind == "operator":
        return sa.true()
    if viewer.kind == "department":
        return IngestRun.dataset_id.in_(dataset_service.ids_supplied_by(department=viewer.supplier_id))
    raise Forbidden(f"ingest runs are seen by the operator and the supplying department, not {a_kind(viewer.kind)}")


def get_visible_run(session: Session, *, run_id: int, viewer: Principal) -> IngestRun:
    """A run as the viewer may see it (another department's answers 404, so run ids do not tell
    what other departments deliver)."""
    run = session.scalar(sa.select(IngestRun).where(IngestRun.id == run_id, readable_by(viewer)))
    if run is None:
        raise NotFound(f"no ingest run {run_id}")
    return run


def list_runs(
    session: Session,
    *,
    dataset_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
    department: str | None = None,
    viewer: Principal | None = None,
) -> list[IngestRun]:
    """Runs newest first; with a viewer, only those it may read (None: the system, every run)."""
    q = sa.select(IngestRun).order_by(IngestRun.id.desc()).limit(limit)
    if viewer is not None:
        q = q.where(readable_by(viewer))
    if department is not None:
        q = q.where(
            IngestRun.dataset_id.in_([d.id for d in dataset_service.list_datasets(session, department=department)])
        )
    if dataset_id:
        dataset_service.get_dataset(session, dataset_id=dataset_id)
        q = q.where(IngestRun.dataset_id == dataset_id)
    if status:
        q = q.where(IngestRun.status == status)
    return list(session.scalars(q))


def list_rejects(session: Session, *, run_id: int, limit: int | None = None) -> list[IngestReject]:
    get_run(session, run_id=run_id)
    q = sa.select(IngestReject).where(IngestReject.run_id == run_id).order_by(IngestReject.seq)
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def reject_report_csv(session: Session, *, run_id: int) -> Iterator[str]:
    """The run's reject report as CSV, streamed in pages."""
    get_run(session, run_id=run_id)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["line", "column", "reason", "value"])
    yield buf.getvalue()
    after = 0
    while True:
        page = list(
            session.scalars(
                sa.select(IngestReject)
                .where(IngestReject.run_id == run_id, IngestReject.seq > after)
                .order_by(IngestReject.seq)
                .limit(5000)
            )
        )
        if not page:
            return
        buf = io.StringIO()
        w = csv.writer(buf)
        for r in page:
            w.writerow([r.line if r.line is not None else "", r.column or "", r.reason, r.value or ""])
        yield buf.getvalue()
        after = page[-1].seq


def reap_stalled_runs(session: Session, *, stall_seconds: float) -> list[int]:
    """Abort runs with no progress for stall_seconds and end their database work, discarding it."""
    rows = session.execute(
        sa.text(
            "UPDATE ingest_run SET status = 'aborted', finished_at = now(), error_code = 'stalled', "
            "error = 'no progress for ' || :secs || ' s; the run was aborted and its partial work discarded' "
            "WHERE status = 'running' AND coalesce(heartbeat_at, started_at, created_at) "
            "< now() - make_interval(secs => :secs) RETURNING id"
        ),
        {"secs": stall_seconds},
    ).all()
    ids = [r[0] for r in rows]
    for run_id in ids:
        # the load transaction is named after its run: ending it rolls the partial version back
        session.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :app"),
            {"app": f"datazone-ingest:{run_id}"},
        )
    return ids


def count_rejects(session: Session, *, run_id: int) -> int:
    return session.scalar(sa.select(sa.func.count()).where(IngestReject.run_id == run_id)) or 0


@dataclass(frozen=True)
class RunDay:
    """The runs of one Shanghai day (by when they were requested) that ended in, or are in, `status`."""

    day: date
    status: str
    runs: int
    rows_loaded: int
    rows_rejected: int


def runs_per_day(
    session: Session, *, viewer: Principal, days: int, last_day: date | None = None
) -> list[RunDay]:
    """Ingest runs per Shanghai day of their request and status over the `days` days ending with
    `last_day` (default today), oldest first: the operator's all, a department its datasets'. One
    GROUP BY."""
    scope = readable_by(viewer)
    window = day_window(days=days, last_day=last_day)
    day = shanghai_date(IngestRun.created_at).label("day")
    q = (
        sa.select(
            day,
            IngestRun.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(IngestRun.rows_loaded), 0),
            sa.func.coalesce(sa.func.sum(IngestRun.rows_rejected), 0),
        )
        .where(scope, IngestRun.created_at >= window.since, IngestRun.created_at < window.until)
        .group_by(day, IngestRun.status)
        .order_by(day, IngestRun.status)
    )
    return [
        RunDay(day=d, status=st, runs=int(n), rows_loaded=int(loaded), rows_rejected=int(rejected))
        for d, st, n, loaded, rejected in session.execute(q)
    ]


@dataclass(frozen=True)
class FailedRun:
    """A failed run as a dashboard lists it: what failed, when and why (its rejects: `list_rejects`)."""

    run_id: int
    dataset_id: str
    trigger: str
    created_at: datetime
    finished_at: datetime | None
    rows_read: int
    rows_rejected: int
    error_code: str | None
    error: str | None


def latest_failed_runs(session: Session, *, viewer: Principal, limit: int = 20) -> list[FailedRun]:
    """The `limit` (1..1000) most recently requested failed runs the viewer may read, newest first."""
    scope = readable_by(viewer)
    check_figure_limit(limit)
    q = (
        sa.select(
            IngestRun.id,
            IngestRun.dataset_id,
            IngestRun.trigger,
            IngestRun.created_at,
            IngestRun.finished_at,
            IngestRun.rows_read,
            IngestRun.rows_rejected,
            IngestRun.error_code,
            IngestRun.error,
        )
        .where(scope, IngestRun.status == "failed")
        .order_by(IngestRun.created_at.desc(), IngestRun.id.desc())
        .limit(limit)
    )
    return [FailedRun(*row) for row in session.execute(q)]
