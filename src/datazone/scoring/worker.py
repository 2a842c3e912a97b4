"""The scoring domain's share of a worker pass: re-randomization factor pools, then batch jobs.

Pools: for each key an approved model uses, the worker keeps `scoring_factor_pool` factors
(r^n mod n^2, the costly half of a Paillier encryption) sealed in the database, computed in
`scoring_processes` processes, so an online score draws one instead of computing it.

Jobs: a worker claims the oldest queued job (or a running one whose worker has been quiet for
`scoring_stale_minutes`) and computes it chunk by chunk, each chunk in a transaction of its own
that holds the job's row: the checks again (a revoked grant fails the job, naming the
department), the features, the encrypted scores, the seal, the stored chunk and the progress
commit together. A crashed worker loses at most the chunk it was computing; whoever takes the
job over resumes at the first chunk not stored, and stored chunks never change.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from datazone.config import Settings
from datazone.db import Database
from datazone.errors import DomainError
from datazone.observability import metrics
from datazone.scoring import service
from datazone.scoring.models import ScoringJob

log = logging.getLogger("datazone.scoring.worker")


def fill_pools(db: Database, settings: Settings) -> list[str]:
    """Top up the factor pool of every key an approved model uses; drop pools no model needs."""
    done: list[str] = []
    with db.unit_of_work() as s:
        keys = service.keys_in_use(s)
        levels = service.pool_levels(s)
        dropped = service.drop_unused_pools(s)
    if dropped:
        done.append(f"factors-dropped:{dropped}")
    target = settings.scoring_factor_pool
    for fingerprint, public_key in sorted(keys.items()):
        if levels.get(fingerprint, 0) >= target:
            continue
        try:
            with db.unit_of_work() as s:
                added = service.fill_pool(
                    s,
                    settings=settings,
                    key_fingerprint=fingerprint,
                    public_key=public_key,
                    target=target,
                    processes=service.worker_processes(settings),
                )
        except Exception as exc:  # one key's failure must not stop the others
            log.error("filling the factor pool of key %s failed: %s", fingerprint, type(exc).__name__)
            done.append(f"failed:factors:{fingerprint}")
            continue
        if added:
            log.info("factor pool of key %s: %d added", fingerprint, added)
            done.append(f"factors:{fingerprint}:{added}")
    return done


def run_job(
    db: Database, settings: Settings, *, job_id: str, worker_name: str, chunk_limit: int | None = None
) -> str:
    """Compute a claimed job's missing chunks in order; returns its status afterwards ('running'
    when it stopped early: `chunk_limit` reached, or another worker took it over; 'error' when
    the worker itself failed, which fails the job too)."""
    computed = 0
    while chunk_limit is None or computed < chunk_limit:
        try:
            with db.unit_of_work() as s:
                job = s.scalars(
                    sa.select(ScoringJob)
                    .where(ScoringJob.id == job_id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                ).one()
                if job.status != "running" or job.worker != worker_name:
                    log.info(
                        "scoring job %s is %s on %s now: %s stops",
                        job_id,
                        job.status,
                        job.worker,
                        worker_name,
                    )
                    return job.status
                index = service.next_chunk(s, job=job)
                if index is None:
                    service.finish_job(s, job=job, status="succeeded")
                    log.info("scoring job %s succeeded: %d chunks", job_id, job.chunks)
                    return "succeeded"
                try:
                    model, ma = service.authorize_job(s, job=job)
                except DomainError as exc:
                    reason = f"{exc.extra.get('check', 'check')}: {exc.detail}"
                    # a grant revoked, a contract ended, the operator retired the model: not the
                    # institution's doing, so what was not scored is credited; its own retirement is
                    service.finish_job(
                        s,
                        job=job,
                        status="failed",
                        error=reason,
                        credit=not service.retired_by_its_institution(s, job=job),
                    )
                    log.info("scoring job %s stopped before chunk %d: %s", job_id, index, exc.type)
                    return "failed"
                chunk = service.compute_chunk(
                    s, settings=settings, job=job, model=model, ma=ma, index=index, worker=worker_name
                )
                log.info(
                    "scoring job %s chunk %d/%d: %d scored, %d fresh factors",
                    job_id,
                    index + 1,
                    job.chunks,
                    chunk.found,
                    chunk.fresh_factors,
                )
        except Exception as exc:
            # the chunk rolled back with its factors; a bug or a broken key would fail every retry
            log.error("scoring job %s failed in the worker: %s", job_id, type(exc).__name__)
            with db.unit_of_work() as s:
                failed = s.get(ScoringJob, job_id, with_for_update=True)
                if failed is not None and failed.status == "running" and failed.worker == worker_name:
                    service.finish_job(
                        s,
                        job=failed,
                        status="failed",
                        error=f"the zone's worker failed ({type(exc).__name__})",
                        credit=True,
                    )
            return "error"
        computed += 1
    return "running"


def run_jobs(
    db: Database,
    settings: Settings,
    *,
    worker_name: str,
    chunk_limit: int | None = None,
    job_limit: int | None = None,
) -> list[str]:
    """Claim and run jobs one after another until none is left (or `job_limit`)."""
    ran: list[str] = []
    while job_limit is None or len(ran) < job_limit:
        with db.unit_of_work() as s:
            job = service.claim_job(s, worker=worker_name, stale_minutes=settings.scoring_stale_minutes)
            job_id = job.id if job is not None else None
        if job_id is None:
            break
        started = time.perf_counter()
        status = run_job(db, settings, job_id=job_id, worker_name=worker_name, chunk_limit=chunk_limit)
        metrics.worker_job_finished(kind="scoring_job", outcome=status, started=started)
        # a job refused on its checks (a revoked grant) is the job's outcome, not the worker's failure
        ran.append(f"failed:job:{job_id}" if status == "error" else f"job:{job_id}:{status}")
        if status == "running":
            break  # stopped early on purpose: leave the rest for the next pass
    return ran


def run_once(
    db: Database,
    settings: Settings,
    *,
    worker_name: str = "worker",
    chunk_limit: int | None = None,
) -> list[str]:
    """One pass; returns what it built or ran, each failure as 'failed:<name>'.

    `chunk_limit` stops a job after that many chunks, leaving it running on this worker (as a
    crash would): what tests and operators use to see a takeover."""
    done = fill_pools(db, settings)
    done += run_jobs(db, settings, worker_name=worker_name, chunk_limit=chunk_limit)
    return done
