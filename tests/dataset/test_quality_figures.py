"""Quality per dataset version for the dashboards: exact figures from evaluations written here,
the operator's every dataset, a department its own."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from datazone.dataset import evaluation
from datazone.dataset.evaluation import VersionQuality
from datazone.dataset.models import DatasetQuality
from datazone.errors import Forbidden, InvalidSpec
from tests.factories import apply_spec, firm_spec, session_principal

# days no other test's versions arrive on
LAST_DAY = date(2031, 7, 10)
EVALUATED = datetime(2031, 7, 10, 12, 0, tzinfo=UTC)


def evaluated(
    session: Session, dataset_id: str, version: int, *, at: datetime, rejected: int, on_time: bool
) -> VersionQuality:
    """An evaluation of a version of 1,000 rows received, as the scheduler's evaluation stores it."""
    figures = VersionQuality(
        dataset_id=dataset_id, version=version, version_at=at, rows=1000 - rejected, rows_received=1000,
        rows_rejected=rejected, duplicate_keys=0, completeness_overall=0.98, validity=(1000 - rejected) / 1000,
        on_time=on_time, lag_hours=0.0 if on_time else 5.5, evaluated_at=EVALUATED,
    )
    session.add(DatasetQuality(completeness={"capital": 0.9}, age_hours=1.0, **vars(figures)))
    session.flush()
    return figures


def test_quality_per_version(session: Session) -> None:
    tag = secrets.token_hex(3)
    dept_a, dept_b = f"quality-a-{tag}", f"quality-b-{tag}"
    a1, b1 = f"quality_a1_{tag}", f"quality_b1_{tag}"
    apply_spec(session, firm_spec(a1, department=dept_a))
    apply_spec(session, firm_spec(b1, department=dept_b))
    a1v1 = evaluated(session, a1, 1, at=datetime(2031, 7, 1, 0, 0, tzinfo=UTC), rejected=0, on_time=True)
    a1v2 = evaluated(session, a1, 2, at=datetime(2031, 7, 8, 18, 0, tzinfo=UTC), rejected=12, on_time=True)
    a1v3 = evaluated(session, a1, 3, at=datetime(2031, 7, 9, 18, 0, tzinfo=UTC), rejected=0, on_time=False)
    b1v1 = evaluated(session, b1, 1, at=datetime(2031, 7, 9, 2, 0, tzinfo=UTC), rejected=3, on_time=True)
    operator = session_principal(session, roles=["curator"])
    # version 1 arrived before the 2-day window; no other test's versions arrive in it
    assert evaluation.quality_per_version(session, viewer=operator, days=2, last_day=LAST_DAY) == [a1v2, a1v3, b1v1]
    assert (a1v2.validity, a1v3.lag_hours) == (0.988, 5.5)
    # one dataset over a year, the first `limit` versions
    assert evaluation.quality_per_version(
        session, viewer=operator, days=366, last_day=LAST_DAY, dataset_id=a1, limit=2
    ) == [a1v1, a1v2]
    # a department: its own datasets only
    department = session_principal(session, "department", supplier_id=dept_a)
    assert evaluation.quality_per_version(session, viewer=department, days=2, last_day=LAST_DAY) == [a1v2, a1v3]


def test_who_may_read_quality_and_the_bounds(session: Session) -> None:
    with pytest.raises(Forbidden):
        evaluation.quality_per_version(session, viewer=session_principal(session, "institution"), days=7)
    operator = session_principal(session, roles=["curator"])
    with pytest.raises(InvalidSpec, match="limit is 1 to 1000"):
        evaluation.quality_per_version(session, viewer=operator, days=7, limit=0)
    with pytest.raises(InvalidSpec, match="days is 1 to 366"):
        evaluation.quality_per_version(session, viewer=operator, days=1000)
