"""Engine PSI jobs are billed once: the same Idempotency-Key returns the job first created,
charging nothing more, and a job that ends without its result for a reason on the zone's side
is credited back, once, with a ledger entry naming it; one the institution never joined stays
charged."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import sqlalchemy as sa

from datazone.psi import service
from tests.conftest import problem
from tests.psi.conftest import Zone
from tests.psi.test_sdk_and_engine import free_port


def _post(zone: Zone, key: str | None, **body: object) -> httpx.Response:
    base: dict[str, object] = {
        "product": "dishonest-debtor-psi",
        "purpose": "pre_loan",
        "set_size": 200,
        "peer_address": f"127.0.0.1:{free_port()}",
        "protocol": "rr22",
    }
    headers = {**zone.token, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(f"{zone.url}/v1/psi/jobs", json={**base, **body}, headers=headers, timeout=30)


def _one(zone: Zone, query: str, **params: object) -> Any:
    with zone.db.engine.connect() as conn:
        return conn.execute(sa.text(query), params).one()


def _counts(zone: Zone, institution_id: int) -> tuple[int, int, int, int]:
    """(jobs, usage events, ledger debits, the month's charged fen) of the institution."""
    row = _one(
        zone,
        "SELECT (SELECT count(*) FROM psi_job WHERE institution_id = :i),"
        " (SELECT count(*) FROM usage_event WHERE institution_id = :i),"
        " (SELECT count(*) FROM ledger_entry WHERE institution_id = :i AND kind = 'debit'),"
        " (SELECT coalesce(sum(charged_fen), 0) FROM meter_count WHERE institution_id = :i AND period ~ '^[0-9]{4}-[0-9]{2}$')",
        i=institution_id,
    )
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def _settle(zone: Zone, job_id: str) -> None:
    """Take a test's queued job out of the queue, so no later test's worker waits on it."""
    with zone.db.unit_of_work() as s:
        s.execute(
            sa.text("UPDATE psi_job SET status = 'failed', reason = 'test', finished_at = now() WHERE id = :j"
                    " AND status = 'queued'"),
            {"j": job_id},
        )


def _credits_of(zone: Zone, job_id: str) -> list[Any]:
    with zone.db.engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT c.id, c.amount_fen, c.memo, c.reverses_id, d.amount_fen AS debit_fen, j.credit_id"
                    " FROM psi_job j JOIN usage_event u ON u.call_id = j.call_id AND u.at = j.created_at"
                    " JOIN ledger_entry c ON c.reverses_id = u.debit_id JOIN ledger_entry d ON d.id = u.debit_id"
                    " WHERE j.id = :j GROUP BY c.id, d.amount_fen, j.credit_id ORDER BY c.id"
                ),
                {"j": job_id},
            ).all()
        )


def test_the_same_idempotency_key_returns_the_same_job_and_charges_once(zone: Zone) -> None:
    key = f"psi-job-{uuid.uuid4()}"
    peer = f"127.0.0.1:{free_port()}"
    first = _post(zone, key, peer_address=peer, set_size=211)
    assert first.status_code == 201, first.text
    job = first.json()
    institution_id = int(_one(zone, "SELECT institution_id FROM psi_job WHERE id = :j", j=job["job_id"])[0])
    before = _counts(zone, institution_id)
    try:
        assert job["charged_fen"] > 0 and "Idempotent-Replayed" not in first.headers
        again = _post(zone, key, peer_address=peer, set_size=211)
        assert again.status_code == 201, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        replayed = again.json()
        assert replayed["job_id"] == job["job_id"] and replayed["charged_fen"] == job["charged_fen"]
        assert replayed["status"] == "queued"
        # the zone keeps only a ticket's hash: a retry while the job waits gets a fresh ticket, the first stops working
        assert replayed["ticket"] and replayed["ticket"] != job["ticket"]
        stored = bytes(_one(zone, "SELECT ticket_sha256 FROM psi_job WHERE id = :j", j=job["job_id"])[0])
        assert stored == hashlib.sha256(replayed["ticket"].encode()).digest()
        # no second job, usage event, debit or spend
        assert _counts(zone, institution_id) == before
        # the same key for another request is refused, and writes nothing
        other = _post(zone, key, peer_address=peer, set_size=212)
        assert other.status_code == 422 and problem(other)["type"].endswith("/idempotency-key-reused")
        assert _counts(zone, institution_id) == before
        # once a worker has the job, a retry shows it without a ticket (the link waits for the one given)
        with zone.db.unit_of_work() as s:
            s.execute(sa.text("UPDATE psi_job SET status = 'running' WHERE id = :j"), {"j": job["job_id"]})
        running = _post(zone, key, peer_address=peer, set_size=211)
        assert running.status_code == 201 and running.json()["status"] == "running"
        assert running.json()["ticket"] is None
        assert _counts(zone, institution_id) == before
    finally:
        with zone.db.unit_of_work() as s:
            s.execute(sa.text("UPDATE psi_job SET status = 'queued' WHERE id = :j"), {"j": job["job_id"]})
        _settle(zone, job["job_id"])


def test_a_job_no_worker_took_is_expired_and_credited_once_naming_it(zone: Zone) -> None:
    created = _post(zone, None, set_size=223)
    assert created.status_code == 201, created.text
    job = created.json()
    charged = job["charged_fen"]
    assert charged > 0
    institution_id = int(_one(zone, "SELECT institution_id FROM psi_job WHERE id = :j", j=job["job_id"])[0])
    spend_before = _counts(zone, institution_id)[3]
    with zone.db.unit_of_work() as s:
        s.execute(
            sa.text("UPDATE psi_job SET expires_at = now() - interval '1 second' WHERE id = :j"), {"j": job["job_id"]}
        )
    with zone.db.unit_of_work() as s:
        assert service.expire_stale_jobs(s) >= 1
    [credit] = _credits_of(zone, job["job_id"])
    assert credit.amount_fen == charged == credit.debit_fen and credit.credit_id == credit.id
    assert job["job_id"] in credit.memo and "expired" in credit.memo
    # the month's spend is given back
    assert _counts(zone, institution_id)[3] == spend_before - charged
    # a worker restarted mid-way that credits the job again credits nothing more
    with zone.db.unit_of_work() as s:
        row = service.get_job(s, institution_id=institution_id, job_id=job["job_id"])
        service.credit_job(s, job=row)
        service.finish_job(s, job_id=row.id, status="expired", reason=row.reason, credit=True)
    assert len(_credits_of(zone, job["job_id"])) == 1
    status = httpx.get(f"{zone.url}/v1/psi/jobs/{job['job_id']}", headers=zone.token, timeout=30).json()
    assert status["status"] == "expired"

