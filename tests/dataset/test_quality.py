"""Quality figures per dataset version: hand-counted data, frozen clocks, the scheduler job."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from datazone.config import Settings
from datazone.dataset import evaluation, quality
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.ingest.scheduler import IngestScheduler
from tests.admission import BAD_BATCH, ingest, new_dataset
from tests.conftest import problem
from tests.factories import bearer, firm_rows, principal_key, write_csv


def version_at(session: Session, dataset_id: str, version: int) -> datetime:
    return dataset_service.get_version(session, dataset_id=dataset_id, version=version).created_at


def test_figures_follow_from_the_delivered_rows(
    db: Database, settings: Settings, tmp_path: Path, session: Session
) -> None:
    ds = new_dataset(db, reject_tolerance=0.2)
    ingest(db, settings, ds.id, write_csv(tmp_path / "a.csv", BAD_BATCH))
    t0 = version_at(session, ds.id, 1)
    result = evaluation.evaluate_datasets(session, now=t0 + timedelta(hours=29), dataset_ids=[ds.id])
    assert result.evaluated == [(ds.id, 1)]
    [q] = evaluation.dataset_quality(session, dataset_id=ds.id)
    assert (q.rows, q.rows_received, q.rows_rejected, q.duplicate_keys) == (9, 10, 1, 0)
    assert q.completeness == pytest.approx(
        {"uscc": 1.0, "name": 1.0, "capital": 6 / 9, "founded": 1.0, "status": 1.0, "staff": 1.0}, abs=1e-6
    )
    assert q.completeness_overall == pytest.approx(51 / 54, abs=1e-6)
    assert q.validity == pytest.approx(0.9)
    # daily: allowed 1 day + 6 h, so 29 h old is on time
    assert (q.on_time, q.age_hours, q.lag_hours) == (True, 29.0, 0.0)


def evaluate(db: Database, dataset_id: str, now: datetime) -> evaluation.EvaluationResult:
    with db.unit_of_work() as s:
        return evaluation.evaluate_datasets(s, now=now, dataset_ids=[dataset_id])


def latest_figures(db: Database, dataset_id: str) -> list[tuple[int, int, bool, float, float]]:
    with db.unit_of_work() as s:
        return [
            (q.version, q.rows, q.on_time, q.age_hours, q.lag_hours)
            for q in evaluation.dataset_quality(s, dataset_id=dataset_id)
        ]


def test_timeliness_against_the_declared_frequency(db: Database, settings: Settings, tmp_path: Path) -> None:
    daily, weekly = new_dataset(db), new_dataset(db, frequency="weekly")
    for ds in (daily, weekly):
        ingest(db, settings, ds.id, write_csv(tmp_path / f"{ds.id}.csv", firm_rows(3)))
    with db.unit_of_work() as s:
        d0, w0 = version_at(s, daily.id, 1), version_at(s, weekly.id, 1)
    evaluate(db, daily.id, d0 + timedelta(hours=40))
    assert latest_figures(db, daily.id) == [(1, 3, False, 40.0, 10.0)]
    # a later evaluation refreshes the latest version's timeliness without recomputing it
    result = evaluate(db, daily.id, d0 + timedelta(hours=20))
    assert result.evaluated == [] and result.refreshed == [(daily.id, 1)]
    assert latest_figures(db, daily.id) == [(1, 3, True, 20.0, 0.0)]
    # weekly: allowed 7 days + 1 day = 192 h
    evaluate(db, weekly.id, w0 + timedelta(hours=200))
    assert latest_figures(db, weekly.id) == [(1, 3, False, 200.0, 8.0)]
    # once version 2 arrives, version 1 is judged by when its successor came (in time)
    ingest(db, settings, daily.id, write_csv(tmp_path / "d2.csv", firm_rows(4)))
    with db.unit_of_work() as s:
        d1 = version_at(s, daily.id, 2)
    result = evaluate(db, daily.id, d1 + timedelta(days=40))
    assert result.evaluated == [(daily.id, 2)] and result.refreshed == [(daily.id, 1)]
    (v2, v1) = latest_figures(db, daily.id)
    assert v2 == (2, 4, False, 40 * 24.0, 40 * 24.0 - 30)
    assert v1[:3] == (1, 3, True) and v1[3] == pytest.approx((d1 - d0).total_seconds() / 3600, abs=1e-3)
    # and stays so: a further evaluation leaves version 1 alone
    assert evaluate(db, daily.id, d1 + timedelta(days=41)).refreshed == [(daily.id, 2)]


def test_timeliness_windows() -> None:
    t = datetime(2026, 1, 1)
    assert quality.timeliness(frequency="monthly", version_at=t, until=t + timedelta(days=34)).on_time
    late = quality.timeliness(frequency="monthly", version_at=t, until=t + timedelta(days=35))
    assert (late.on_time, late.lag_hours) == (False, 24.0)
    assert quality.timeliness(frequency="weekly", version_at=t, until=t + timedelta(days=8)).on_time


def test_scheduler_job_evaluates_new_versions(db: Database, settings: Settings, tmp_path: Path) -> None:
    ds = new_dataset(db)
    ingest(db, settings, ds.id, write_csv(tmp_path / "a.csv", firm_rows(7)))
    IngestScheduler(db, settings).evaluate()
    with db.unit_of_work() as s:
        [q] = evaluation.dataset_quality(s, dataset_id=ds.id)
        assert (q.version, q.rows, q.validity, q.on_time) == (1, 7, 1.0, True)
    # a second scheduler (started by mistake) evaluating again changes nothing but timeliness
    IngestScheduler(db, settings).evaluate()
    with db.unit_of_work() as s:
        assert len(evaluation.dataset_quality(s, dataset_id=ds.id)) == 1


def test_quality_api_is_scoped(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    ds = new_dataset(db)
    ingest(db, settings, ds.id, write_csv(tmp_path / "a.csv", firm_rows(2)))
    with db.unit_of_work() as s:
        evaluation.evaluate_datasets(s, now=datetime.now().astimezone(), dataset_ids=[ds.id])
    r = client.get(f"/v1/datasets/{ds.id}/quality", headers=keys["auditor"])
    assert r.status_code == 200 and [q["version"] for q in r.json()] == [1] and r.json()[0]["rows"] == 2
    own = bearer(principal_key(db, "department", supplier_id="test-dept"))
    assert client.get(f"/v1/datasets/{ds.id}/quality", headers=own).status_code == 200
    bank = bearer(principal_key(db, "institution"))
    assert problem(client.get(f"/v1/datasets/{ds.id}/quality", headers=bank))["status"] == 404
    assert problem(client.get("/v1/datasets/nope/quality", headers=keys["auditor"]))["status"] == 404


def test_overall_score_weights() -> None:
    full: dict[str, float | None] = {"completeness": 1.0, "validity": 1.0, "timeliness": 1.0, "rating": 1.0}
    assert quality.overall_score(full) == 100.0
    # a missing component is left out and the others scaled up
    assert quality.overall_score({**full, "rating": None, "timeliness": 0.0}) == pytest.approx(
        100 * 60 / 85, abs=0.01
    )
    assert quality.overall_score(dict.fromkeys(full)) is None
    assert quality.rating_component(1) == 0.0 and quality.rating_component(5) == 1.0


def test_declared_thresholds_per_field() -> None:
    """A spec may declare lower minimums for fields sparse by nature; required fields stay at 100%."""
    declared = quality.Thresholds.declared(
        {"quality": {"min_validity": 0.9, "fields": {"removed_on": 0.0, "name": 0.5}}}
    )
    figures = {
        "completeness": {"removed_on": 0.2, "capital": 0.94, "name": 0.99},
        "validity": 0.9,
        "rows_received": 10,
        "rows_rejected": 1,
        "duplicate_keys": 0,
    }
    failures = quality.sample_failures(figures, required={"name"}, thresholds=declared)
    assert [(f["location"], f["threshold"]) for f in failures] == [
        ("completeness.capital", 0.95),
        ("completeness.name", 1.0),
    ]
    assert quality.Thresholds.declared({}) == quality.Thresholds(0.95, 0.99, {})
