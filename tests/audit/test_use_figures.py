"""The per-day figures beside the use history (a department's uses of its data, an institution's
calls) and the operator's refusals by check: exact figures from entries recorded here."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from datazone.audit import service as audit
from datazone.audit.service import RefusalCount, UseDay
from datazone.errors import Forbidden, InvalidSpec
from datazone.principal.models import Principal
from tests.factories import ensure_department, make_uscc, session_principal

# days no other test records on: the figures below are all there is in the window
LAST_DAY = date(2031, 5, 10)
EVENING_9TH = datetime(2031, 5, 9, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
MORNING_10TH = datetime(2031, 5, 9, 16, 30, tzinfo=UTC)  # 00:30 in Shanghai


def access(
    session: Session,
    bank: Principal,
    *,
    at: datetime,
    product_id: str,
    departments: list[str],
    enterprises: int,
    check: str | None = None,
    reason: str | None = None,
) -> None:
    """A product call as the pipeline records it: answered, or refused by `check`."""
    entry = audit.record(
        session,
        actor=bank,
        action=audit.DATA_ACCESS,
        object_type="product",
        object_id=product_id,
        outcome="refused" if check or reason else "ok",
        reason=reason,
        purpose="pre_loan",
        entities=[make_uscc(i) for i in range(enterprises)],
        supplier_ids=departments,
        detail={"check": check, "status": 403} if check or reason else {},
    )
    entry.at = at
    session.flush()


@pytest.fixture
def parties(session: Session) -> dict[str, Principal]:
    ensure_department(session, "uses-tax")
    ensure_department(session, "uses-court")
    bank_a, bank_b = session_principal(session, "institution"), session_principal(session, "institution")
    access(session, bank_a, at=EVENING_9TH, product_id="tax-grade", departments=["uses-tax"], enterprises=3)
    access(session, bank_a, at=MORNING_10TH, product_id="tax-grade", departments=["uses-tax"], enterprises=2)
    access(session, bank_a, at=MORNING_10TH, product_id="tax-grade", departments=["uses-tax"], enterprises=1)
    access(session, bank_b, at=MORNING_10TH, product_id="risk-insight", departments=["uses-tax", "uses-court"],
           enterprises=5)
    access(session, bank_b, at=MORNING_10TH, product_id="court-cases", departments=["uses-court"], enterprises=4)
    access(session, bank_b, at=MORNING_10TH, product_id="tax-grade", departments=["uses-tax"], enterprises=2,
           check="grant")
    access(session, bank_a, at=EVENING_9TH, product_id="risk-insight", departments=["uses-tax", "uses-court"],
           enterprises=1, check="consent")
    access(session, bank_a, at=MORNING_10TH, product_id="risk-insight", departments=["uses-tax", "uses-court"],
           enterprises=1, check="consent")
    # refused before any gate tagged it: counted under its problem type
    access(session, bank_b, at=MORNING_10TH, product_id="court-cases", departments=[], enterprises=0,
           reason="invalid-uscc")
    # 2031-05-11 in Shanghai: outside the window
    access(session, bank_a, at=datetime(2031, 5, 10, 16, 0, tzinfo=UTC), product_id="tax-grade",
           departments=["uses-tax"], enterprises=7)
    return {
        "bank_a": bank_a,
        "bank_b": bank_b,
        "tax": session_principal(session, "department", supplier_id="uses-tax"),
        "court": session_principal(session, "department", supplier_id="uses-court"),
        "auditor": session_principal(session, roles=["auditor"]),
    }


def test_a_department_sees_the_uses_of_its_data_per_day(session: Session, parties: dict[str, Principal]) -> None:
    a, b = parties["bank_a"], parties["bank_b"]
    tax = audit.uses_per_day(session, viewer=parties["tax"], days=2, last_day=LAST_DAY)
    assert tax == [
        UseDay(date(2031, 5, 9), "risk-insight", a.id, a.name, calls=0, enterprises=0, refused=1),
        UseDay(date(2031, 5, 9), "tax-grade", a.id, a.name, calls=1, enterprises=3, refused=0),
        UseDay(date(2031, 5, 10), "risk-insight", a.id, a.name, calls=0, enterprises=0, refused=1),
        UseDay(date(2031, 5, 10), "risk-insight", b.id, b.name, calls=1, enterprises=5, refused=0),
        UseDay(date(2031, 5, 10), "tax-grade", a.id, a.name, calls=2, enterprises=3, refused=0),
        UseDay(date(2031, 5, 10), "tax-grade", b.id, b.name, calls=0, enterprises=0, refused=1),
    ]
    court = audit.uses_per_day(session, viewer=parties["court"], days=1, last_day=LAST_DAY, product_id="court-cases")
    assert court == [UseDay(date(2031, 5, 10), "court-cases", b.id, b.name, calls=1, enterprises=4, refused=0)]
    # the paged table beside the chart: the same uses, newest entry first, paged on by entry id
    window = (datetime(2031, 5, 8, 16, 0, tzinfo=UTC), datetime(2031, 5, 10, 16, 0, tzinfo=UTC))
    page = audit.list_uses(session, viewer=parties["court"], since=window[0], until=window[1], limit=3)
    assert [(u.institution, u.product_id, u.entity_count, u.purpose, u.outcome) for u in page] == [
        (a.name, "risk-insight", 1, "pre_loan", "refused"),
        (a.name, "risk-insight", 1, "pre_loan", "refused"),
        (b.name, "court-cases", 4, "pre_loan", "ok"),
    ]
    rest = audit.list_uses(
        session, viewer=parties["court"], since=window[0], until=window[1], before_id=page[-1].entry_id
    )
    assert [(u.institution, u.product_id, u.entity_count, u.outcome) for u in rest] == [
        (b.name, "risk-insight", 5, "ok"),
    ]


def test_an_institution_sees_its_own_calls_and_an_auditor_all(
    session: Session, parties: dict[str, Principal]
) -> None:
    b = parties["bank_b"]
    assert audit.uses_per_day(session, viewer=b, days=2, last_day=LAST_DAY) == [
        UseDay(date(2031, 5, 10), "court-cases", b.id, b.name, calls=1, enterprises=4, refused=1),
        UseDay(date(2031, 5, 10), "risk-insight", b.id, b.name, calls=1, enterprises=5, refused=0),
        UseDay(date(2031, 5, 10), "tax-grade", b.id, b.name, calls=0, enterprises=0, refused=1),
    ]
    everything = audit.uses_per_day(session, viewer=parties["auditor"], days=2, last_day=LAST_DAY)
    assert sum(d.calls for d in everything) == 5
    assert sum(d.enterprises for d in everything) == 15
    assert sum(d.refused for d in everything) == 4


def test_refusals_by_check(session: Session, parties: dict[str, Principal]) -> None:
    auditor = parties["auditor"]
    refusals = audit.refusals_by_check(session, viewer=auditor, days=2, last_day=LAST_DAY)
    assert refusals == [
        RefusalCount("consent", refusals=2, institutions=1, last_at=MORNING_10TH),
        RefusalCount("grant", refusals=1, institutions=1, last_at=MORNING_10TH),
        RefusalCount("invalid-uscc", refusals=1, institutions=1, last_at=MORNING_10TH),
    ]
    assert audit.refusals_by_check(session, viewer=auditor, days=1, last_day=date(2031, 5, 9)) == [
        RefusalCount("consent", refusals=1, institutions=1, last_at=EVENING_9TH),
    ]
    # a department sees the refusals of calls for its data only
    assert audit.refusals_by_check(session, viewer=parties["court"], days=2, last_day=LAST_DAY) == [
        RefusalCount("consent", refusals=2, institutions=1, last_at=MORNING_10TH),
    ]


def test_who_may_read_the_figures_and_their_bounds(session: Session, parties: dict[str, Principal]) -> None:
    curator = session_principal(session, roles=["curator"])
    with pytest.raises(Forbidden):
        audit.refusals_by_check(session, viewer=curator, days=7)
    with pytest.raises(Forbidden):
        audit.uses_per_day(session, viewer=curator, days=7)
    with pytest.raises(InvalidSpec, match="days is 1 to 366"):
        audit.uses_per_day(session, viewer=parties["tax"], days=367)


def test_entries_are_searched_by_actor_object_and_outcome(session: Session, parties: dict[str, Principal]) -> None:
    """The console's audit search narrows by who acted, on what and how it ended, exactly."""
    auditor = session_principal(session, "operator", roles=["auditor"])
    bank_b = parties["bank_b"]
    by_actor = audit.list_entries(session, viewer=auditor, actor=bank_b.name, limit=1000)
    assert by_actor and {e.actor_name for e in by_actor} == {bank_b.name}
    refused = audit.list_entries(session, viewer=auditor, actor=bank_b.name, outcome="refused", limit=1000)
    assert refused and {e.outcome for e in refused} == {"refused"}
    assert len(refused) < len(by_actor)
    on_product = audit.list_entries(session, viewer=auditor, object_id="risk-insight", actor=bank_b.name)
    assert {e.object_id for e in on_product} == {"risk-insight"}
    assert audit.list_entries(session, viewer=auditor, actor=bank_b.name, object_id="no-such-product") == []
