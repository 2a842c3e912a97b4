"""A revocation racing with requests, each in its own transaction as on separate replicas:
requests that passed the check before the revocation finish under the grant, the revocation
commits only after them, and every request that starts later is refused with grant-revoked,
including those that arrive while the revocation is still waiting (no starvation)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.db import Database
from datazone.grant import service
from datazone.grant.service import GrantRevoked
from tests.grant.builders import Parties, committed_parties, days, now

HOLD_SECONDS = 0.6  # how long an in-flight request keeps answering after its check


@dataclass
class Outcome:
    checked_at: datetime | None = None  # clock_timestamp() right after the check returned
    before_commit: datetime | None = None  # clock_timestamp() just before COMMIT
    refused: GrantRevoked | None = None
    error: BaseException | None = None


def clock(s: Session) -> datetime:
    value = s.scalar(sa.select(sa.func.clock_timestamp()))
    assert value is not None
    return value


def request(
    db: Database, p: Parties, out: Outcome, *, hold: float, checked: threading.Semaphore | None = None
) -> None:
    s = db.session()
    try:
        service.require_grants(
            s, product_id="credit-basic", dataset_ids=[p.ds_a2, p.ds_a1], institution_id=p.bank1.id,
            purpose="pre_loan", at=now(),
        )  # fmt: skip
        out.checked_at = clock(s)
        if checked is not None:
            checked.release()
        time.sleep(hold)  # answering: reading zone tables, metering...
        out.before_commit = clock(s)
        s.commit()
    except GrantRevoked as exc:
        out.refused = exc
        out.checked_at = clock(s)
        s.rollback()
    except BaseException as exc:
        out.error = exc
        s.rollback()
    finally:
        s.close()


@pytest.mark.usefixtures("catalog")
def test_revocation_waits_for_requests_under_way_and_refuses_every_later_one(db: Database) -> None:
    p = committed_parties(db)
    with db.unit_of_work() as s:
        g = service.create_grant(
            s, department=p.dept_a, datasets=[p.ds_a1, p.ds_a2], purposes=["pre_loan"], products=None,
            institutions=None, valid_from=now() - days(1), valid_to=now() + days(30), by=p.dept_a_user,
        )  # fmt: skip

    in_flight = [Outcome() for _ in range(6)]
    checked = threading.Semaphore(0)
    threads = [
        threading.Thread(target=request, args=(db, p, o), kwargs={"hold": HOLD_SECONDS, "checked": checked})
        for o in in_flight
    ]
    for t in threads:
        t.start()
    for _ in in_flight:
        assert checked.acquire(timeout=30), "the in-flight requests did not pass the check"

    revoked: dict[str, datetime] = {}

    def revoke() -> None:
        with db.unit_of_work() as s:
            service.revoke_grant(s, grant_id=g.id, by=p.dept_a_user, reason="institution breached its terms")
            revoked["before_commit"] = clock(s)
        with db.unit_of_work() as s:
            revoked["committed_by"] = clock(s)

    revoker = threading.Thread(target=revoke)
    revoker.start()
    time.sleep(0.15)  # the revocation is now waiting for the in-flight requests
    # requests arriving while the revocation waits queue behind it rather than starve it
    arriving = [Outcome() for _ in range(4)]
    arriving_threads = [
        threading.Thread(target=request, args=(db, p, o), kwargs={"hold": HOLD_SECONDS}) for o in arriving
    ]
    for t in arriving_threads:
        t.start()
        time.sleep(0.05)
    revoker.join(30)
    assert not revoker.is_alive(), "the revocation never committed"
    for t in threads + arriving_threads:
        t.join(30)

    # after the commit, every request on any connection is refused
    after = [Outcome() for _ in range(3)]
    for o in after:
        request(db, p, o, hold=0)

    assert all(o.error is None for o in in_flight + arriving + after), [
        o.error for o in in_flight + arriving + after
    ]
    assert all(o.refused is None and o.before_commit is not None for o in in_flight)
    with db.unit_of_work() as s:
        stored = service.get_grant(s, grant_id=g.id, viewer=p.dept_a_user)
    assert stored.revoked_at is not None
    last_in_flight = max(o.before_commit for o in in_flight if o.before_commit is not None)
    # the revocation took effect (and committed) only after the requests that had passed the check
    assert stored.revoked_at > last_in_flight
    assert revoked["before_commit"] > last_in_flight
    for o in arriving + after:
        assert o.refused is not None, "a request starting after the revocation was answered"
        body = o.refused.problem()
        assert body["type"].endswith("/grant-revoked") and body["grant_id"] == g.id
        assert body["revoked_at"] == stored.revoked_at.isoformat()
        assert o.checked_at is not None and o.checked_at > stored.revoked_at
