"""Ingest runs per day and status, and the latest failures: exact figures from runs written here,
the operator's every run, a department its own datasets' runs."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from datazone.errors import Forbidden, InvalidSpec
from datazone.ingest import service as ingest
from datazone.ingest.models import IngestRun
from datazone.ingest.service import FailedRun, RunDay
from datazone.principal.models import Principal
from tests.factories import apply_spec, firm_spec, session_principal

# days no other test runs on (and later than any real run, so these failures are the latest)
LAST_DAY = date(2031, 6, 10)


def run(
    session: Session, dataset_id: str, *, status: str, at: datetime, loaded: int = 0, rejected: int = 0,
    error: str | None = None,
) -> IngestRun:
    failed = status == "failed"
    entry = IngestRun(
        dataset_id=dataset_id, status=status, trigger="schedule", requested_by="scheduler", created_at=at,
        finished_at=at if status in ("succeeded", "failed") else None, rows_read=loaded + rejected,
        rows_loaded=loaded, rows_rejected=rejected, error_code="too-many-rejects" if failed else None, error=error,
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass
class Runs:
    a1: str
    a2: str
    first_failure: IngestRun
    second_failure: IngestRun
    old_failure: IngestRun
    dept_a: Principal
    operator: Principal


@pytest.fixture
def runs(session: Session) -> Runs:
    tag = secrets.token_hex(3)
    dept_a, dept_b = f"runs-a-{tag}", f"runs-b-{tag}"
    a1, a2, b1 = f"runs_a1_{tag}", f"runs_a2_{tag}", f"runs_b1_{tag}"
    for dataset_id, dept in ((a1, dept_a), (a2, dept_a), (b1, dept_b)):
        apply_spec(session, firm_spec(dataset_id, department=dept))
    # 2031-06-09 in Shanghai (02:00 and 23:00)
    run(session, a1, status="succeeded", at=datetime(2031, 6, 8, 18, 0, tzinfo=UTC), loaded=100)
    first_failure = run(session, a2, status="failed", at=datetime(2031, 6, 9, 15, 0, tzinfo=UTC), loaded=0,
                        rejected=12, error="12 rows rejected, tolerance 0")
    # 2031-06-10 in Shanghai
    run(session, a1, status="succeeded", at=datetime(2031, 6, 9, 16, 0, tzinfo=UTC), loaded=40, rejected=1)
    run(session, b1, status="succeeded", at=datetime(2031, 6, 9, 18, 0, tzinfo=UTC), loaded=60)
    second_failure = run(session, b1, status="failed", at=datetime(2031, 6, 9, 20, 0, tzinfo=UTC), rejected=3,
                         error="3 rows rejected")
    run(session, a1, status="new", at=datetime(2031, 6, 9, 21, 0, tzinfo=UTC))
    # 2031-06-08 in Shanghai: before a 2-day window
    old_failure = run(session, a1, status="failed", at=datetime(2031, 6, 8, 3, 0, tzinfo=UTC), rejected=1,
                      error="old")
    return Runs(
        a1=a1, a2=a2, first_failure=first_failure, second_failure=second_failure, old_failure=old_failure,
        dept_a=session_principal(session, "department", supplier_id=dept_a),
        operator=session_principal(session, roles=["curator"]),
    )


def failed(r: IngestRun) -> FailedRun:
    return FailedRun(r.id, r.dataset_id, "schedule", r.created_at, r.finished_at, r.rows_read, r.rows_rejected,
                     "too-many-rejects", r.error)


def test_runs_per_day_and_status(session: Session, runs: Runs) -> None:
    operator = runs.operator
    assert ingest.runs_per_day(session, viewer=operator, days=2, last_day=LAST_DAY) == [
        RunDay(date(2031, 6, 9), "failed", runs=1, rows_loaded=0, rows_rejected=12),
        RunDay(date(2031, 6, 9), "succeeded", runs=1, rows_loaded=100, rows_rejected=0),
        RunDay(date(2031, 6, 10), "failed", runs=1, rows_loaded=0, rows_rejected=3),
        RunDay(date(2031, 6, 10), "new", runs=1, rows_loaded=0, rows_rejected=0),
        RunDay(date(2031, 6, 10), "succeeded", runs=2, rows_loaded=100, rows_rejected=1),
    ]
    # a department: its own datasets' runs only
    assert ingest.runs_per_day(session, viewer=runs.dept_a, days=2, last_day=LAST_DAY) == [
        RunDay(date(2031, 6, 9), "failed", runs=1, rows_loaded=0, rows_rejected=12),
        RunDay(date(2031, 6, 9), "succeeded", runs=1, rows_loaded=100, rows_rejected=0),
        RunDay(date(2031, 6, 10), "new", runs=1, rows_loaded=0, rows_rejected=0),
        RunDay(date(2031, 6, 10), "succeeded", runs=1, rows_loaded=40, rows_rejected=1),
    ]


def test_latest_failed_runs(session: Session, runs: Runs) -> None:
    first, second = runs.first_failure, runs.second_failure
    # the newest failures in the zone are these (dated 2031), newest first
    assert ingest.latest_failed_runs(session, viewer=runs.operator, limit=2) == [
        failed(second), failed(first)
    ]
    mine = ingest.latest_failed_runs(session, viewer=runs.dept_a)
    assert [(f.run_id, f.dataset_id, f.rows_rejected, f.error) for f in mine] == [
        (first.id, runs.a2, 12, "12 rows rejected, tolerance 0"),
        (runs.old_failure.id, runs.a1, 1, "old"),
    ]


def test_who_may_read_runs_and_the_bounds(session: Session, runs: Runs) -> None:
    bank = session_principal(session, "institution")
    with pytest.raises(Forbidden):
        ingest.runs_per_day(session, viewer=bank, days=7)
    with pytest.raises(Forbidden):
        ingest.latest_failed_runs(session, viewer=bank)
    with pytest.raises(InvalidSpec, match="limit is 1 to 1000"):
        ingest.latest_failed_runs(session, viewer=runs.operator, limit=1001)
    with pytest.raises(InvalidSpec, match="days is 1 to 366"):
        ingest.runs_per_day(session, viewer=runs.operator, days=0)
