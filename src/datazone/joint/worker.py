"""The joint worker: statistics jobs summed over encrypted labels, training jobs run against the
institution's side over the engine link, both out of every request handler.

Each job is claimed once (SKIP LOCKED), checked again against its grants and contract before
it starts and, for training, every second while it runs, and settled in a transaction of its
own: succeeded with its result, or failed or expired with its charge credited back when the
zone did not deliver (docs/joint-modeling.md).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

from datazone.config import Settings
from datazone.db import Database
from datazone.errors import DomainError
from datazone.joint import service
from datazone.joint.models import JointJob
from datazone.observability import metrics
from datazone.privacy import engine as link_engine
from datazone.privacy import joint_model

log = logging.getLogger("datazone.joint.worker")


def run_once(db: Database, settings: Settings, *, worker_name: str) -> list[str]:
    """Expire what waited too long, then run queued jobs one after another."""
    ran: list[str] = []
    while True:
        with db.unit_of_work() as s:
            service.expire_stale_jobs(s)
            job = service.claim_job(s, worker=worker_name)
            job_id, kind = (job.id, job.kind) if job is not None else (None, None)
        if job_id is None:
            # nothing to run: compute a receiving statistics job's features ahead of its columns
            with db.unit_of_work() as s:
                pending = service.claim_features(s, worker=worker_name)
            if pending is None:
                return ran
            try:
                features = job_features(db, settings, job_id=pending)
            except Exception as exc:  # the job computes them itself once queued
                log.error("features of joint job %s failed ahead of its columns: %s", pending, type(exc).__name__)
                continue
            with db.unit_of_work() as s:
                service.keep_features(s, job_id=pending, features=features)
            continue
        started = time.perf_counter()
        status = (
            run_stats(db, settings, job_id=job_id) if kind == "stats" else run_training(db, settings, job_id=job_id)
        )
        metrics.worker_job_finished(kind=f"joint_{kind}", outcome=status, started=started)
        ran.append(f"{job_id}:{status}" if status == "succeeded" else f"failed:{job_id}")


def _refused(db: Database, *, job_id: str) -> bool:
    """Fail (and credit) a job whose grants or contract no longer hold."""
    with db.unit_of_work() as s:
        job = s.get(JointJob, job_id)
        assert job is not None
        why = service.job_refusal(s, job=job)
        if why is None:
            return False
        service.finish_job(s, job_id=job_id, status="failed", reason=f"stopped by the zone: {why}", credit=True)
        return True


def _progress(db: Database, job_id: str) -> service.ProgressNote:
    def note(phase: str, done: int, total: int) -> None:
        with db.unit_of_work() as s:
            service.note_progress(s, job_id=job_id, phase=phase, done=done, total=total)

    return note


# below this many sample enterprises the features are computed in the worker's own process: a
# child's start-up (about a second of imports) would cost more than it saves
PARALLEL_FROM = 20_000


def _features_part(
    settings: Settings, product_id: str, names: list[str], codes: list[str], as_of: date
) -> service.ZoneFeatures:
    """One process's share of a job's features (a spawned child: a database engine of its own)."""
    db = Database.from_settings(settings, migrate_schema=False)  # the worker that spawned it migrated
    try:
        with db.unit_of_work() as s:
            spec = service.spec_of_product(s, product_id=product_id)
            return service.clamped_features(s, spec=spec, names=names, codes=codes, as_of=as_of)
    finally:
        db.dispose()


def job_features(db: Database, settings: Settings, *, job_id: str) -> service.ZoneFeatures:
    """A job's zone features for its sample, computed in `joint_processes` processes (the product
    engine's per-enterprise logic is Python: 100,000 enterprises take about 24 s on one core)."""
    with db.unit_of_work() as s:
        job = s.get(JointJob, job_id)
        assert job is not None
        product_id, names, codes, as_of = job.product_id, list(job.features), list(job.sample), service.job_day(job)
        processes = min(settings.joint_processes or os.cpu_count() or 1, max(1, len(codes) // (PARALLEL_FROM // 2)))
        if processes <= 1 or len(codes) < PARALLEL_FROM:
            return service.clamped_features(
                s, spec=service.spec_of_job(s, job=job), names=names, codes=codes, as_of=as_of
            )
    parts = [list(part) for part in np.array_split(np.array(codes, dtype=object), processes)]
    # spawned, not forked: the worker holds database connections and threads a fork would copy
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        computed = list(
            pool.map(_features_part, *zip(*[(settings, product_id, names, part, as_of) for part in parts], strict=True))
        )
    return service.ZoneFeatures(
        names, np.concatenate([c.values for c in computed]), sum(c.found for c in computed)
    )


def run_stats(db: Database, settings: Settings, *, job_id: str) -> str:
    """Sum a statistics job's encrypted columns per bin and group; returns its final status."""
    if _refused(db, job_id=job_id):
        return "failed"
    started = time.perf_counter()
    try:
        with db.unit_of_work() as s:
            job = s.get(JointJob, job_id)
            assert job is not None
            features = service.kept_features(job)
        if features is None:
            _progress(db, job_id)("features", 0, 0)
            features = job_features(db, settings, job_id=job_id)
        with db.unit_of_work() as s:
            job = s.get(JointJob, job_id)
            assert job is not None
            result = service.run_stats(s, job=job, progress=_progress(db, job_id), features=features)
    except DomainError as exc:
        # bins the institution declared fall under the minimum count: nothing computed is shown
        with db.unit_of_work() as s:
            service.finish_job(s, job_id=job_id, status="failed", reason=exc.detail, credit=True)
        return "failed"
    except Exception as exc:
        log.error("joint statistics job %s failed: %s", job_id, type(exc).__name__)
        with db.unit_of_work() as s:
            service.finish_job(
                s, job_id=job_id, status="failed", reason=f"the zone's worker failed ({type(exc).__name__})", credit=True
            )
        return "failed"
    with db.unit_of_work() as s:
        service.finish_job(
            s, job_id=job_id, status="succeeded", result=result, report={"seconds": round(time.perf_counter() - started, 3)}
        )
    log.info("joint statistics job %s succeeded", job_id)
    return "succeeded"


def _workdir(settings: Settings, job_id: str) -> Path:
    workdir = settings.home / "joint" / "jobs" / job_id
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return workdir


def run_training(db: Database, settings: Settings, *, job_id: str, poll_seconds: float = 1.0) -> str:
    """Run the zone's side of a training job against the institution's; returns its final status.

    The zone's side runs in a child process (privacy/joint_model.py); each second the worker
    checks the job's grants and contract again and stops the child when one no longer holds."""
    if _refused(db, job_id=job_id):
        return "failed"
    workdir = _workdir(settings, job_id)
    try:
        _progress(db, job_id)("features", 0, 0)
        features = job_features(db, settings, job_id=job_id)
        with db.unit_of_work() as s:
            job = s.get(JointJob, job_id)
            assert job is not None
            tls = None
            if job.institution_certificate_pem and job.zone_certificate_pem:
                zone_key = service.zone_link_key(settings, job)
                assert zone_key is not None
                cert, key, peer = workdir / "zone.crt", workdir / "zone.key", workdir / "institution.crt"
                cert.write_text(job.zone_certificate_pem)
                link_engine.write_private(key, zone_key)
                peer.write_text(job.institution_certificate_pem)
                tls = link_engine.TlsFiles(certificate=cert, private_key=key, peer_ca=peer)
            remaining = min(
                settings.joint_link_timeout_seconds, max(1.0, (job.expires_at - service.utcnow()).total_seconds())
            )
            assert job.zone_address is not None and job.peer_address is not None and job.ticket_sha256 is not None
            link = link_engine.LinkSpec(
                job_id=job.id,
                zone_address=job.zone_address,
                institution_address=job.peer_address,
                connect_timeout_s=remaining,
                recv_timeout_s=settings.joint_peer_silence_seconds,
                tls=tls,
            )
            # the zone trains with the parameters the job was created with; the bank's side must
            # bring the same ones (the zone's side checks them on the link)
            params = joint_model.TrainParams(
                epochs=int(job.params["epochs"]),
                batch_size=int(job.params["batch_size"]),
                learning_rate=float(job.params["learning_rate"]),
                l2=float(job.params["l2"]),
                sigmoid=job.params.get("sigmoid", "seg3"),
            )
            bins = service.scorecard_bins(job=job, features=features)
            proc = joint_model.ZoneTrainProcess(
                link,
                ticket_sha256=bytes(job.ticket_sha256),
                features=features.values.astype("float64"),
                params=params,
                bins=bins.indices if bins is not None else None,
                bin_counts=bins.counts if bins is not None else None,
                run_dir=workdir,
            )
        proc.start()
        status, reason, credit, report = "failed", None, False, None
        shown: str | None = None
        while True:
            try:
                zone_report = proc.wait(timeout=poll_seconds)
            except link_engine.PeerNeverConnected as exc:
                status, reason, credit = "expired", str(exc), True
                break
            except link_engine.TicketRejected as exc:
                status, reason = "failed", str(exc)
                break
            except link_engine.EngineError as exc:
                # stopped by the zone, the engine failed or the link dropped: credited
                status, reason, credit = "failed", str(exc), True
                break
            if zone_report is not None:
                status, report = "succeeded", dataclasses.asdict(zone_report)
                break
            phase = proc.phase
            if phase is not None and phase != shown:
                shown = phase
                _progress(db, job_id)(phase, 0, 0)
            with db.unit_of_work() as s:
                job = s.get(JointJob, job_id)
                assert job is not None
                why = service.job_refusal(s, job=job)
            if why is not None:
                proc.cancel(f"stopped by the zone: {why}")
        if reason is not None:
            # the institution reads the reason: no path of the zone's machine in it
            reason = link_engine.reason_for_peer(reason, workdir)
        with db.unit_of_work() as s:
            service.finish_job(s, job_id=job_id, status=status, reason=reason, credit=credit, report=report)
        proc.close("the job ended")
        log.info("joint training job %s %s", job_id, status)
        return status
    except Exception as exc:
        log.error("joint training job %s failed: %s", job_id, type(exc).__name__)
        with db.unit_of_work() as s:
            service.finish_job(
                s, job_id=job_id, status="failed", reason=f"the zone's worker failed ({type(exc).__name__})", credit=True
            )
        return "failed"
    finally:
        # the engine's log is kept for the operator; the job's inputs are not
        link_engine.close_run_dir(workdir, logs=settings.home / "joint" / "logs", name=job_id)
