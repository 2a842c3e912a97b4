"""Schedules: each scheduled run claimed once, missed runs coalesced, stalled runs aborted."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from datazone.config import Settings
from datazone.dataset.schemas import SHANGHAI
from datazone.db import Database
from datazone.ingest import service as ingest_service
from datazone.ingest.models import IngestRun
from datazone.ingest.scheduler import IngestScheduler, latest_fire_time
from tests.conftest import unique_id
from tests.factories import apply_spec, firm_rows, firm_spec, write_csv


def test_latest_fire_time_is_the_most_recent_due_time() -> None:
    spec = firm_spec("sched_unit", schedule="30 2 * * *")  # 02:30 Shanghai = 18:30 UTC the day before
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    due = latest_fire_time(spec, now=now, after=None)
    assert due is not None
    assert due.astimezone(SHANGHAI).replace(tzinfo=None) == datetime(2026, 11, 21, 2, 30)
    # nothing due after the last claimed time
    assert latest_fire_time(spec, now=now, after=due) is None
    # three days of downtime: only the latest of the missed times
    assert latest_fire_time(spec, now=now, after=due - timedelta(days=3)) == due
    monthly = firm_spec("sched_unit2", schedule="0 3 1 * *")
    m = latest_fire_time(monthly, now=now, after=None)
    assert m is not None and m.astimezone(SHANGHAI).replace(tzinfo=None) == datetime(2026, 11, 1, 3, 0)


def test_a_scheduled_time_is_claimed_once(db: Database) -> None:
    spec = firm_spec(unique_id("claim"))
    when = datetime(2026, 1, 1, 2, 0, tzinfo=SHANGHAI)
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    with db.unit_of_work() as s:
        assert ingest_service.claim_scheduled_run(s, dataset_id=spec.id, scheduled_for=when) is not None
    with db.unit_of_work() as s:
        assert ingest_service.claim_scheduled_run(s, dataset_id=spec.id, scheduled_for=when) is None


def _backdate(db: Database, dataset_id: str, days: int) -> None:
    with db.unit_of_work() as s:
        s.execute(
            sa.text("UPDATE dataset SET created_at = now() - make_interval(days => :d) WHERE id = :id"),
            {"d": days, "id": dataset_id},
        )


def _runs(db: Database, dataset_id: str) -> list[IngestRun]:
    with db.unit_of_work() as s:
        return ingest_service.list_runs(s, dataset_id=dataset_id)


def test_two_schedulers_run_a_missed_schedule_once(db: Database, settings: Settings) -> None:
    """Three days of downtime, two schedulers started at once: one run, for the latest missed time."""
    spec = firm_spec(unique_id("twice"), schedule="0 2 * * *")
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    _backdate(db, spec.id, 3)
    write_csv(settings.drop_path / spec.id / "a.csv", firm_rows(50))
    a, b = IngestScheduler(db, settings), IngestScheduler(db, settings)
    barrier = threading.Barrier(2)

    def go(sched: IngestScheduler) -> None:
        barrier.wait()
        sched.fire(spec.id)

    threads = [threading.Thread(target=go, args=(x,)) for x in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    runs = _runs(db, spec.id)
    assert len(runs) == 1, [(r.id, r.scheduled_for) for r in runs]
    run = runs[0]
    assert run.status == "succeeded" and run.trigger == "schedule" and run.rows_loaded == 50
    expected = latest_fire_time(spec, now=datetime.now(UTC), after=None)
    assert run.scheduled_for == expected
    # firing again finds nothing due
    a.fire(spec.id)
    assert len(_runs(db, spec.id)) == 1


def test_queued_manual_runs_are_executed_once(db: Database, settings: Settings) -> None:
    spec = firm_spec(unique_id("queue"))
    with db.unit_of_work() as s:
        apply_spec(s, spec)
        run_id = ingest_service.request_run(s, dataset_id=spec.id, trigger="manual", requested_by="op").id
    write_csv(settings.drop_path / spec.id / "a.csv", firm_rows(20))
    a, b = IngestScheduler(db, settings), IngestScheduler(db, settings)
    threads = [threading.Thread(target=x.run_queued) for x in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    runs = _runs(db, spec.id)
    assert [r.id for r in runs] == [run_id]
    assert runs[0].status == "succeeded" and runs[0].rows_loaded == 20


def test_stalled_run_is_aborted(db: Database, settings: Settings) -> None:
    spec = firm_spec(unique_id("stall"))
    with db.unit_of_work() as s:
        apply_spec(s, spec)
        run = ingest_service.request_run(s, dataset_id=spec.id, trigger="cli")
        run.status = "running"
        s.flush()
        s.execute(
            sa.text("UPDATE ingest_run SET heartbeat_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": run.id},
        )
        fresh = ingest_service.request_run(s, dataset_id=spec.id, trigger="cli")
        fresh.status = "running"
        s.flush()
        s.execute(sa.text("UPDATE ingest_run SET heartbeat_at = now() WHERE id = :id"), {"id": fresh.id})
    with db.unit_of_work() as s:
        aborted = ingest_service.reap_stalled_runs(s, stall_seconds=60)
    assert run.id in aborted and fresh.id not in aborted
    with db.unit_of_work() as s:
        got = ingest_service.get_run(s, run_id=run.id)
        assert got.status == "aborted" and got.error_code == "stalled" and got.finished_at is not None
        assert ingest_service.get_run(s, run_id=fresh.id).status == "running"


def test_purge_forgets_idempotent_answers_past_their_keeping_time(db: Database, settings: Settings) -> None:
    from datazone.metering import service as metering_service
    from datazone.principal import service as principal_service

    with db.unit_of_work() as s:
        inst = principal_service.create_principal(s, kind="institution", name=unique_id("purge"))
        inst_id = inst.id
        fp = metering_service.fingerprint("GET", "/v1/products/x/enterprises/y", "", b"")
        assert metering_service.begin_idempotent(s, institution_id=inst_id, key="k-1", fingerprint=fp) is None
        metering_service.store_answer(
            s, institution_id=inst_id, key="k-1", fingerprint=fp, status=200, body={"a": 1}, headers={}
        )
    # kept for a day: the purge leaves it, and a retry still gets the stored answer
    IngestScheduler(db, settings).purge()
    with db.unit_of_work() as s:
        stored = metering_service.begin_idempotent(s, institution_id=inst_id, key="k-1", fingerprint=fp)
        assert stored is not None and stored.body == {"a": 1}
    # kept for no time at all: the purge forgets it, and the key is free again
    IngestScheduler(db, settings.model_copy(update={"idempotency_hours": 0.0})).purge()
    with db.unit_of_work() as s:
        assert metering_service.begin_idempotent(s, institution_id=inst_id, key="k-1", fingerprint=fp) is None
