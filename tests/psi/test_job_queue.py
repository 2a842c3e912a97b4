"""PSI jobs per status for the operator's worker-queue figures and an institution's own."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from datazone.errors import Forbidden
from datazone.principal.models import Principal
from datazone.psi import service as psi
from datazone.psi.models import PsiJob, PsiKeyEpoch
from datazone.psi.service import JobsInStatus
from tests.factories import ensure_department, session_principal

# older than any job a real test creates, so the oldest of a status is one of these
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


def retired_epoch(session: Session) -> int:
    epoch = PsiKeyEpoch(key_encrypted=b"not a key", retired_at=LONG_AGO)
    session.add(epoch)
    session.flush()
    return epoch.id


def job(session: Session, bank: Principal, *, status: str, epoch: int, created_at: datetime) -> None:
    session.add(
        PsiJob(
            id=secrets.token_hex(16), institution_id=bank.id, client_id="app-1", product_id="psi-match",
            purpose="pre_loan", contract_id=1, protocol="ecdh", set_size=100, epoch=epoch, slice_key="all",
            peer_address="127.0.0.1:1", zone_address="127.0.0.1:2", ticket_sha256=b"\0" * 32, status=status,
            created_at=created_at, expires_at=created_at + timedelta(days=1),
        )
    )
    session.flush()


def test_psi_jobs_per_status(session: Session) -> None:
    operator = session_principal(session, roles=["curator"])
    before = {q.status: q.jobs for q in psi.job_queue(session, viewer=operator)}
    bank, other = session_principal(session, "institution"), session_principal(session, "institution")
    epoch = retired_epoch(session)
    job(session, bank, status="queued", epoch=epoch, created_at=LONG_AGO + timedelta(hours=2))
    job(session, bank, status="queued", epoch=epoch, created_at=LONG_AGO + timedelta(hours=1))
    job(session, bank, status="running", epoch=epoch, created_at=LONG_AGO + timedelta(hours=3))
    job(session, bank, status="failed", epoch=epoch, created_at=LONG_AGO + timedelta(hours=4))
    job(session, other, status="queued", epoch=epoch, created_at=LONG_AGO)

    assert psi.job_queue(session, viewer=bank) == [
        JobsInStatus("failed", jobs=1, oldest_created_at=LONG_AGO + timedelta(hours=4)),
        JobsInStatus("queued", jobs=2, oldest_created_at=LONG_AGO + timedelta(hours=1)),
        JobsInStatus("running", jobs=1, oldest_created_at=LONG_AGO + timedelta(hours=3)),
    ]
    after = {q.status: q for q in psi.job_queue(session, viewer=operator)}
    added = {status: q.jobs - before.get(status, 0) for status, q in after.items()}
    assert {s: n for s, n in added.items() if n} == {"queued": 3, "running": 1, "failed": 1}
    assert after["queued"].oldest_created_at == LONG_AGO


def test_a_department_sees_no_psi_jobs(session: Session) -> None:
    ensure_department(session, "psi-queue-dept")
    with pytest.raises(Forbidden):
        psi.job_queue(session, viewer=session_principal(session, "department", supplier_id="psi-queue-dept"))


def test_an_institution_lists_its_own_psi_jobs_newest_first(session: Session) -> None:
    bank, other = session_principal(session, "institution"), session_principal(session, "institution")
    epoch = retired_epoch(session)
    job(session, bank, status="queued", epoch=epoch, created_at=LONG_AGO + timedelta(hours=1))
    job(session, bank, status="succeeded", epoch=epoch, created_at=LONG_AGO + timedelta(hours=2))
    job(session, other, status="queued", epoch=epoch, created_at=LONG_AGO + timedelta(hours=3))

    mine = psi.list_jobs(session, viewer=bank)
    assert [(j.status, j.created_at) for j in mine] == [
        ("succeeded", LONG_AGO + timedelta(hours=2)),
        ("queued", LONG_AGO + timedelta(hours=1)),
    ]
    assert [j.institution_id for j in psi.list_jobs(session, viewer=other)] == [other.id]
    assert len(psi.list_jobs(session, viewer=bank, limit=1)) == 1
    ensure_department(session, "psi-list-dept")
    with pytest.raises(Forbidden):
        psi.list_jobs(session, viewer=session_principal(session, "department", supplier_id="psi-list-dept"))
