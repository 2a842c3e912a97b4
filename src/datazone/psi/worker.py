"""The PSI worker: the zone's heavy PSI work, out of every request handler.

Each pass rotates the zone key when due, precomputes what the live epoch and the current
slice versions lack (OpenMined setups, label tables), and purges old session chunks. Each
artifact is built in a transaction of its own, under a per-artifact advisory lock, so two
workers never build the same thing twice and a failure leaves the others standing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from datazone.config import Settings
from datazone.db import Database
from datazone.observability import metrics
from datazone.privacy import engine as psi_engine
from datazone.psi import service

log = logging.getLogger("datazone.psi.worker")

# how a job can fail because of the institution: it presented a wrong ticket or ran another
# protocol than its job's (a peer that never connected ends `expired`); such a job stays
# charged, as docs/psi.md section 7 says. Every other failure is credited back.
INSTITUTION_SIDE_ERRORS = (psi_engine.TicketRejected, psi_engine.ProtocolMismatch)


@dataclass
class WorkerPass:
    rotated_to: int | None = None
    built: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    purged_chunks: int = 0
    jobs: list[str] = field(default_factory=list)


def run_once(db: Database, settings: Settings, *, run_jobs: bool = False, worker_name: str = "worker") -> WorkerPass:
    done = WorkerPass()
    with db.unit_of_work() as s:
        epoch = service.rotate_if_due(s, settings=settings)
        done.rotated_to = epoch.id if epoch is not None else None
    with db.unit_of_work() as s:
        needed = service.needed_artifacts(s, settings=settings)
    for need in needed:
        name = f"{need.product_id}/{need.kind}" + (f"@{need.clearance}" if need.kind == "labels" else "")
        started = time.perf_counter()
        try:
            with db.unit_of_work() as s:
                art = service.build_artifact(
                    s, settings=settings, product_id=need.product_id, kind=need.kind, clearance=need.clearance
                )
                log.info(
                    "built %s for %s (epoch %s): %s items, %s bytes in %.1f s",
                    need.kind, need.product_id, art.epoch, art.items, art.size_bytes, time.perf_counter() - started,
                )
            done.built.append(name)
            metrics.worker_job_finished(kind="psi_artifact", outcome="built", started=started)
        except Exception as exc:  # one product's failure must not stop the others
            log.error("building %s failed: %s", name, type(exc).__name__)
            done.failed.append(name)
            metrics.worker_job_finished(kind="psi_artifact", outcome="failed", started=started)
    done.built += [f"engine-cache/{c}" for c in ensure_engine_caches(db, settings)]
    with db.unit_of_work() as s:
        done.purged_chunks = service.purge_expired_sessions(s)
    if run_jobs:
        done.jobs = run_queued_jobs(db, settings, worker_name=worker_name)
    return done


def run_job(db: Database, settings: Settings, *, job_id: str, poll_seconds: float = 1.0) -> str:
    """Run the zone's side of a claimed engine job to its end; returns the job's final status.

    The engine runs in a child process: each second the worker checks the job's grants and
    contract again and stops the child when one no longer holds, and the child is always
    reaped. The slice's items are written to a private directory removed afterwards."""

    from datazone.product import service as product_service
    from datazone.psi.models import PsiJob

    workdir = settings.home / "psi" / "jobs" / job_id
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with db.unit_of_work() as s:
            job = s.get(PsiJob, job_id)
            assert job is not None
            spec = product_service.spec_of(product_service.get_product(s, product_id=job.product_id))
            slice_ = service.slice_of(s, spec=spec)
            if slice_.key != job.slice_key:
                service.finish_job(
                    s, job_id=job_id, status="failed",
                    reason=f"the slice changed since the job was created ({job.slice_key} -> {slice_.key}): "
                    "create a new job (this one is credited)",
                    credit=True,
                )
                return "failed"
            items_csv = workdir / "zone.csv"
            cached = job.protocol == "unbalanced" and job.cache_id is not None and (
                engine_cache_dir(settings, job.cache_id) / "ready"
            ).exists()
            unbalanced = job.protocol == "unbalanced"
            # the unbalanced protocol's online phase needs only its cache, not the slice
            if cached:
                psi_engine.write_items_csv(items_csv, [])
            elif unbalanced:  # its cache is built from the slice before the job's link
                with psi_engine.items_csv_writer(items_csv) as out:
                    service.copy_slice(s, spec=spec, out=out)
            tls = None
            if job.institution_certificate_pem and job.zone_certificate_pem:
                zone_key = service.job_zone_key(s, settings=settings, job=job)
                assert zone_key is not None
                cert, key, peer = workdir / "zone.crt", workdir / "zone.key", workdir / "institution.crt"
                cert.write_text(job.zone_certificate_pem)
                psi_engine.write_private(key, zone_key)
                peer.write_text(job.institution_certificate_pem)
                tls = psi_engine.TlsFiles(certificate=cert, private_key=key, peer_ca=peer)
            cache_dir = secret_file = None
            if job.protocol == "unbalanced":
                assert job.cache_id is not None
                secret_file = workdir / "ub.key"
                psi_engine.write_private(secret_file, service.unbalanced_secret(s, settings=settings, epoch=job.epoch))
                cache_dir = engine_cache_dir(settings, job.cache_id)
            remaining = min(
                settings.psi_link_timeout_seconds, max(1.0, (job.expires_at - service.utcnow()).total_seconds())
            )
            link = psi_engine.LinkSpec(
                job_id=job.id,
                zone_address=job.zone_address,
                institution_address=job.peer_address,
                connect_timeout_s=remaining,
                recv_timeout_s=max(60.0, settings.psi_link_timeout_seconds),
                tls=tls,
            )
            ticket_sha256, protocol = bytes(job.ticket_sha256), cast("psi_engine.Protocol", job.protocol)
            if not unbalanced:
                # the engine's child brings the link up while the slice is copied (about 2 s for a
                # million), so the institution, which starts at once, does not wait for the copy
                proc = psi_engine.ZoneSideProcess(
                    link=link, ticket_sha256=ticket_sha256, protocol=protocol, items_csv=items_csv,
                    workdir=workdir, items_pending=True,
                )
                proc.start()
                try:
                    with psi_engine.items_csv_writer(items_csv) as out:
                        service.copy_slice(s, spec=spec, out=out)
                    proc.items_written()
                except BaseException:
                    proc.close("the zone could not write its slice")
                    raise
        if unbalanced:
            if cache_dir is not None and secret_file is not None:
                ensure_engine_cache(cache_dir, items_csv=items_csv, secret_file=secret_file)
            proc = psi_engine.ZoneSideProcess(
                link=link,
                ticket_sha256=ticket_sha256,
                protocol=protocol,
                items_csv=items_csv,
                workdir=workdir,
                unbalanced_cache=cache_dir,
                secret_key_file=secret_file,
            )
            proc.start()
        status, reason, transferred, credit = "failed", None, False, False
        while True:
            try:
                report = proc.wait(timeout=poll_seconds)
            except psi_engine.PeerNeverConnected as exc:
                status, reason = "expired", str(exc)
                break
            except INSTITUTION_SIDE_ERRORS as exc:
                status, reason = "failed", str(exc)
                break
            except psi_engine.EngineError as exc:
                # stopped by the zone (a grant revoked), the engine failed, the link dropped or
                # the result is unconfirmed: nothing the zone can lay at the institution's door
                status, reason, credit = "failed", str(exc), True
                break
            if report is not None:
                status, reason = "succeeded", None
                transferred = report.cache_transferred
                break
            with db.unit_of_work() as s:
                job = s.get(PsiJob, job_id)
                assert job is not None
                why = service.job_refusal(s, job=job)
            if why is not None:
                proc.cancel(f"stopped by the zone: {why}")
        if reason is not None:
            # the institution reads the reason: no path of the zone's machine in it
            reason = psi_engine.reason_for_peer(reason, workdir)
        with db.unit_of_work() as s:
            job = service.finish_job(s, job_id=job_id, status=status, reason=reason, credit=credit)
            if status == "succeeded" and job.protocol == "unbalanced":
                # what the link found, not what the institution claimed when it created the job
                job.have_cache = not transferred
        # the job is settled for the institution; the engine's child may still be closing its link
        proc.close("the job ended")
        log.info("PSI job %s %s", job_id, status)
        return status
    except Exception as exc:
        log.error("PSI job %s failed: %s", job_id, type(exc).__name__)
        with db.unit_of_work() as s:
            service.finish_job(
                s, job_id=job_id, status="failed", reason=f"the zone's worker failed ({type(exc).__name__})", credit=True
            )
        return "failed"
    finally:
        # the engine's log is kept for the operator; the job's inputs are not
        psi_engine.close_run_dir(workdir, logs=settings.home / "psi" / "logs", name=job_id)


def run_queued_jobs(db: Database, settings: Settings, *, worker_name: str, limit: int | None = None) -> list[str]:
    """Claim and run queued jobs one after another; returns the ids run."""
    ran: list[str] = []
    while limit is None or len(ran) < limit:
        with db.unit_of_work() as s:
            service.expire_stale_jobs(s)
            job = service.claim_job(s, worker=worker_name)
            job_id = job.id if job is not None else None
        if job_id is None:
            return ran
        started = time.perf_counter()
        status = run_job(db, settings, job_id=job_id)
        metrics.worker_job_finished(kind="psi_job", outcome=status, started=started)
        ran.append(job_id)
    return ran


def engine_cache_dir(settings: Settings, cache_id: str) -> Path:
    return settings.home / "psi" / "engine-cache" / cache_id


def ensure_engine_cache(cache_dir: Path, *, items_csv: Path, secret_file: Path) -> bool:
    """Build the engine's unbalanced cache of a slice once per slice version and epoch; returns
    whether it built. A file lock keeps two workers of one machine from building it together."""
    import fcntl
    import shutil

    cache_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (cache_dir.parent / f"{cache_dir.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cache_dir / "ready").exists():
            return False
        shutil.rmtree(cache_dir, ignore_errors=True)  # what a crashed build left
        cache_dir.mkdir(mode=0o700)
        psi_engine.build_unbalanced_cache(
            items_csv=items_csv, cache_dir=cache_dir, secret_key_file=secret_file, cache_id=cache_dir.name
        )
        (cache_dir / "ready").write_text("built\n")
        return True


def ensure_engine_caches(db: Database, settings: Settings) -> list[str]:
    """Build, ahead of any job, the unbalanced caches the live epoch and current slices lack here."""
    import shutil

    with db.unit_of_work() as s:
        wanted = service.engine_caches_wanted(s, settings=settings)
    built: list[str] = []
    for product_id, cache_id, epoch in wanted:
        cache_dir = engine_cache_dir(settings, cache_id)
        if (cache_dir / "ready").exists():
            continue
        work = settings.home / "psi" / "jobs" / f"cache-{cache_id}"
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with db.unit_of_work() as s:
                spec = service.product_spec(s, product_id=product_id)
                items_csv = work / "zone.csv"
                with psi_engine.items_csv_writer(items_csv) as out:
                    service.copy_slice(s, spec=spec, out=out)
                secret_file = work / "ub.key"
                psi_engine.write_private(secret_file, service.unbalanced_secret(s, settings=settings, epoch=epoch))
            if ensure_engine_cache(cache_dir, items_csv=items_csv, secret_file=secret_file):
                built.append(cache_id)
        except Exception as exc:  # one product's failure must not stop the others
            log.error("building the engine cache %s failed: %s", cache_id, type(exc).__name__)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return built
