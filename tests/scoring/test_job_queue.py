"""Scoring jobs per status for the operator's worker-queue figures and an institution's own."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from datazone.errors import Forbidden
from datazone.principal.models import Principal
from datazone.scoring import service as scoring
from datazone.scoring.models import ScoringJob, ScoringModel
from datazone.scoring.service import JobsInStatus
from tests.factories import ensure_department, session_principal

# older than any job a real test creates, so the oldest of a status is one of these
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


def model(session: Session, bank: Principal) -> str:
    row = ScoringModel(
        id=secrets.token_hex(8), institution_id=bank.id, client_id="app-1", name=f"m-{secrets.token_hex(4)}",
        product_id="credit-score", purpose="pre_loan", kind="logistic", scale=1000, features=[], registration={},
        registration_sha256="0" * 64, key_fingerprint="0" * 32, key_bits=2048, score_bits=32, slot_bits=64,
        slots=1, resolution=1, state="approved", created_at=LONG_AGO,
    )
    session.add(row)
    session.flush()
    return row.id


def job(session: Session, bank: Principal, model_id: str, *, status: str, chunks: int, done: int, hours: int) -> None:
    session.add(
        ScoringJob(
            id=secrets.token_hex(8), institution_id=bank.id, client_id="app-1", model_id=model_id,
            product_id="credit-score", purpose="pre_loan", contract_id=1, status=status, total=chunks * 100,
            found=chunks * 100, chunk_size=100, chunks=chunks, chunks_done=done,
            created_at=LONG_AGO + timedelta(hours=hours),
        )
    )
    session.flush()


def test_scoring_jobs_per_status(session: Session) -> None:
    operator = session_principal(session, roles=["curator"])
    before = {q.status: (q.jobs, q.chunks_left) for q in scoring.job_queue(session, viewer=operator)}
    bank, other = session_principal(session, "institution"), session_principal(session, "institution")
    mine, theirs = model(session, bank), model(session, other)
    job(session, bank, mine, status="queued", chunks=4, done=0, hours=2)
    job(session, bank, mine, status="running", chunks=10, done=3, hours=1)
    job(session, bank, mine, status="running", chunks=2, done=1, hours=5)
    job(session, bank, mine, status="succeeded", chunks=3, done=3, hours=0)
    job(session, other, theirs, status="queued", chunks=1, done=0, hours=0)

    assert scoring.job_queue(session, viewer=bank) == [
        JobsInStatus("queued", jobs=1, chunks_left=4, oldest_created_at=LONG_AGO + timedelta(hours=2)),
        JobsInStatus("running", jobs=2, chunks_left=8, oldest_created_at=LONG_AGO + timedelta(hours=1)),
        JobsInStatus("succeeded", jobs=1, chunks_left=0, oldest_created_at=LONG_AGO),
    ]
    after = {q.status: q for q in scoring.job_queue(session, viewer=operator)}
    added = {
        status: (q.jobs - before.get(status, (0, 0))[0], q.chunks_left - before.get(status, (0, 0))[1])
        for status, q in after.items()
    }
    assert {s: d for s, d in added.items() if d != (0, 0)} == {"queued": (2, 5), "running": (2, 8), "succeeded": (1, 0)}
    assert after["queued"].oldest_created_at == LONG_AGO


def test_a_department_sees_no_scoring_jobs(session: Session) -> None:
    ensure_department(session, "scoring-queue-dept")
    with pytest.raises(Forbidden):
        scoring.job_queue(session, viewer=session_principal(session, "department", supplier_id="scoring-queue-dept"))


def test_an_institution_lists_its_own_scoring_jobs_newest_first(session: Session) -> None:
    bank, other = session_principal(session, "institution"), session_principal(session, "institution")
    mine, theirs = model(session, bank), model(session, other)
    job(session, bank, mine, status="running", chunks=10, done=3, hours=1)
    job(session, bank, mine, status="succeeded", chunks=2, done=2, hours=2)
    job(session, other, theirs, status="queued", chunks=1, done=0, hours=3)

    listed = scoring.list_jobs(session, viewer=bank)
    assert [(j.status, j.chunks_done, j.chunks) for j in listed] == [("succeeded", 2, 2), ("running", 3, 10)]
    assert scoring.job_view(listed[1])["done"] == 300
    assert [j.institution_id for j in scoring.list_jobs(session, viewer=other)] == [other.id]
    ensure_department(session, "scoring-list-dept")
    with pytest.raises(Forbidden):
        scoring.list_jobs(session, viewer=session_principal(session, "department", supplier_id="scoring-list-dept"))
