"""Anonymous table builds per state for the operator's worker-queue figures."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from datazone.anonymous import service as anonymous
from datazone.anonymous.models import AnonymousTable
from datazone.anonymous.service import TablesInState
from datazone.errors import Forbidden
from datazone.psi.models import PsiKeyEpoch
from tests.factories import session_principal

# older than any table a real test builds, so the oldest of a state is one of these
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


def table(session: Session, epoch: int, *, state: str, hours: int, superseded: bool = False) -> None:
    ready = state == "ready"
    session.add(
        AnonymousTable(
            product_id="anon-exists", sealed_sha256=secrets.token_hex(32), epoch=epoch, data_key="d@v1",
            data_versions={"d": 1}, as_of=date(2001, 1, 1), answer="existence", k=5, clearance=1, state=state,
            prefix_bits=8 if ready else None, smallest_bucket=5 if ready else None,
            created_at=LONG_AGO + timedelta(hours=hours), superseded_at=LONG_AGO if superseded else None,
        )
    )
    session.flush()


def test_builds_per_state(session: Session) -> None:
    operator = session_principal(session, roles=["curator"])
    before = {q.state: q.tables for q in anonymous.build_queue(session, viewer=operator)}
    epoch = PsiKeyEpoch(key_encrypted=b"not a key", retired_at=LONG_AGO)
    session.add(epoch)
    session.flush()
    table(session, epoch.id, state="building", hours=3)
    table(session, epoch.id, state="building", hours=1)
    table(session, epoch.id, state="failed", hours=2)
    table(session, epoch.id, state="ready", hours=4)
    # replaced by a newer build: no longer counted
    table(session, epoch.id, state="ready", hours=0, superseded=True)

    after = {q.state: q for q in anonymous.build_queue(session, viewer=operator)}
    added = {state: q.tables - before.get(state, 0) for state, q in after.items()}
    assert {s: n for s, n in added.items() if n} == {"building": 2, "failed": 1, "ready": 1}
    assert after["building"] == TablesInState("building", tables=before.get("building", 0) + 2,
                                              oldest_created_at=LONG_AGO + timedelta(hours=1))


def test_only_the_operator_sees_builds(session: Session) -> None:
    with pytest.raises(Forbidden):
        anonymous.build_queue(session, viewer=session_principal(session, "institution"))
