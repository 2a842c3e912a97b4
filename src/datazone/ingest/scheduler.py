"""`datazone scheduler`: runs ingestion schedules in a process of its own (APScheduler 3.11).

Exactly one scheduler is meant to run; a second one started by mistake is harmless
because every scheduled run is claimed once, by the unique (dataset, scheduled time)
row in ingest_run, and every queued run is taken with SKIP LOCKED before its status
moves from new to running. Runs missed while no scheduler ran coalesce to one: on
each sync the latest missed fire time, and only that one, is claimed.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from datazone.config import Settings
from datazone.dataset import evaluation as dataset_evaluation
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import SHANGHAI, DatasetSpec
from datazone.db import Database
from datazone.ingest import service as ingest_service
from datazone.ingest.pipeline import execute_run
from datazone.metering import service as metering_service
from datazone.oauth import service as oauth_service

log = logging.getLogger(__name__)

# how far back to look for a missed fire time, widening until one is found
_LOOKBACK = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367))


def latest_fire_time(spec: DatasetSpec, *, now: datetime, after: datetime | None) -> datetime | None:
    """The most recent scheduled time in (after, now], or None."""
    for window in _LOOKBACK:
        start = now - window
        if after is not None and after > start:
            start = after
        times = spec.next_fire_times(start, now)
        if times:
            return times[-1]
        if after is not None and start == after:
            return None
    return None


class IngestScheduler:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.scheduler = BlockingScheduler(
            timezone=SHANGHAI,
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._schedules: dict[str, str] = {}
        self._lock = threading.Lock()

    # --- jobs -------------------------------------------------------------
    def sync(self) -> None:
        """Pick up new or changed schedules, and catch up on runs missed during downtime."""
        with self._lock, self.db.unit_of_work() as s:
            datasets = dataset_service.list_datasets(s)
            wanted: dict[str, str] = {}
            for ds in datasets:
                spec = dataset_service.spec_of(ds)
                if spec.schedule:
                    wanted[ds.id] = spec.schedule
            for dataset_id in set(self._schedules) - set(wanted):
                self.scheduler.remove_job(f"ingest:{dataset_id}")
            for dataset_id, cron in wanted.items():
                if self._schedules.get(dataset_id) != cron:
                    self.scheduler.add_job(
                        self.fire,
                        CronTrigger.from_crontab(cron, timezone=SHANGHAI),
                        args=[dataset_id],
                        id=f"ingest:{dataset_id}",
                        replace_existing=True,
                    )
            self._schedules = wanted
        for dataset_id in wanted:
            self.fire(dataset_id)

    def fire(self, dataset_id: str) -> None:
        """Claim the dataset's latest due scheduled time, if nobody has, and run it."""
        now = datetime.now(UTC)
        with self.db.unit_of_work() as s:
            ds = dataset_service.get_dataset(s, dataset_id=dataset_id)
            spec = dataset_service.spec_of(ds)
            last = ingest_service.last_scheduled_for(s, dataset_id=dataset_id)
            due = latest_fire_time(spec, now=now + timedelta(seconds=1), after=last or ds.created_at)
            if due is None:
                return
            run = ingest_service.claim_scheduled_run(s, dataset_id=dataset_id, scheduled_for=due)
            if run is None:
                return
            run_id = run.id
        log.info("claimed scheduled run %s of %s for %s", run_id, dataset_id, due.astimezone(SHANGHAI))
        self._execute(run_id)

    def run_queued(self) -> None:
        """Execute runs requested through the API (status new), one at a time."""
        while True:
            with self.db.unit_of_work() as s:
                run_id = ingest_service.next_queued_run(s)
            if run_id is None:
                return
            self._execute(run_id)

    def reap(self) -> None:
        with self.db.unit_of_work() as s:
            ids = ingest_service.reap_stalled_runs(s, stall_seconds=self.settings.ingest_stall_seconds)
        for run_id in ids:
            log.warning("aborted stalled ingest run %s", run_id)

    def purge(self) -> None:
        """Forget what has expired: used client assertions, revoked-token entries past their
        token's expiry, idempotent answers past their keeping time."""
        now = datetime.now(UTC)
        with self.db.unit_of_work() as s:
            tokens = oauth_service.purge_expired(s, now)
            answers = metering_service.purge_idempotent(
                s, before=now - timedelta(hours=self.settings.idempotency_hours)
            )
        if tokens or answers:
            log.info("purged %s expired token records and %s idempotent answers", tokens, answers)

    def evaluate(self) -> None:
        """Quality figures for new dataset versions, and timeliness of the latest ones.

        Hourly and coalesced; a second scheduler doing the same upserts the same rows.
        A dataset deleted meanwhile is simply skipped.
        """
        with self.db.unit_of_work() as s:
            dataset_ids = [ds.id for ds in dataset_service.list_datasets(s)]
        evaluated = 0
        for dataset_id in dataset_ids:
            # one transaction a dataset: a long scan of one zone table holds no lock on the others
            with self.db.unit_of_work() as s:
                result = dataset_evaluation.evaluate_datasets(
                    s, now=datetime.now(UTC), dataset_ids=[dataset_id]
                )
            evaluated += len(result.evaluated)
        if evaluated:
            log.info("evaluated quality of %s dataset versions", evaluated)

    def _execute(self, run_id: int) -> None:
        try:
            run = execute_run(self.db, run_id=run_id, settings=self.settings)
        except RuntimeError:
            return  # another worker took it between our look and our claim
        log.info(
            "ingest run %s of %s %s: read %s, loaded %s, rejected %s%s",
            run.id, run.dataset_id, run.status, run.rows_read, run.rows_loaded, run.rows_rejected,
            f" ({run.error})" if run.error else "",
        )  # fmt: skip

    # --- process ----------------------------------------------------------
    def start(self) -> None:
        poll = self.settings.scheduler_poll_seconds
        first = datetime.now(SHANGHAI)
        self.scheduler.add_job(self.reap, "interval", seconds=max(poll, 5.0), id="reap", next_run_time=first)
        self.scheduler.add_job(self.sync, "interval", seconds=30, id="sync", next_run_time=first)
        self.scheduler.add_job(self.run_queued, "interval", seconds=poll, id="queue", next_run_time=first)
        self.scheduler.add_job(self.evaluate, "interval", hours=1, id="evaluate", next_run_time=first)
        self.scheduler.add_job(self.purge, "interval", minutes=10, id="purge", next_run_time=first)
        log.info("scheduler started")
        self.scheduler.start()
