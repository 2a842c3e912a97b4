"""Revenue per Shanghai day from the ledger: debits and credits on the day they were posted,
exact figures from entries written here, the operator's all and an institution its own."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from datazone.billing import service as billing
from datazone.billing.models import LedgerEntry
from datazone.billing.service import RevenueDay
from datazone.errors import Forbidden, InvalidSpec
from datazone.principal.models import Principal
from tests.factories import ensure_department, session_principal

# a day no other test posts on: the figures below are all there is in the window
LAST_DAY = date(2031, 4, 10)


def post(session: Session, bank: Principal, *, kind: str, fen: int, at: datetime, reverses: int | None = None) -> int:
    entry = LedgerEntry(
        institution_id=bank.id, kind=kind, amount_fen=fen, period="2031-04", product_id="risk-insight",
        usage_count=1, memo="test", reverses_id=reverses, at=at,
    )
    session.add(entry)
    session.flush()
    return entry.id


@pytest.fixture
def banks(session: Session) -> tuple[Principal, Principal]:
    bank_a, bank_b = session_principal(session, "institution"), session_principal(session, "institution")
    # 2031-04-09 23:30 in Shanghai
    debit = post(session, bank_a, kind="debit", fen=1000, at=datetime(2031, 4, 9, 15, 30, tzinfo=UTC))
    post(session, bank_b, kind="debit", fen=250, at=datetime(2031, 4, 9, 1, 0, tzinfo=UTC))
    # 2031-04-10 00:30 in Shanghai: a further debit and a part credit of the 9th's debit
    post(session, bank_a, kind="debit", fen=700, at=datetime(2031, 4, 9, 16, 30, tzinfo=UTC))
    post(session, bank_a, kind="credit", fen=400, at=datetime(2031, 4, 9, 17, 0, tzinfo=UTC), reverses=debit)
    # 2031-04-11 in Shanghai: outside the window
    post(session, bank_b, kind="debit", fen=9999, at=datetime(2031, 4, 10, 16, 0, tzinfo=UTC))
    return bank_a, bank_b


def test_the_operator_sees_revenue_per_day(session: Session, banks: tuple[Principal, Principal]) -> None:
    operator = session_principal(session, roles=["curator"])
    figures = billing.revenue_per_day(session, viewer=operator, days=2, last_day=LAST_DAY)
    assert figures == [
        RevenueDay(date(2031, 4, 9), debits=2, debit_fen=1250, credit_fen=0),
        RevenueDay(date(2031, 4, 10), debits=1, debit_fen=700, credit_fen=400),
    ]
    assert [f.net_fen for f in figures] == [1250, 300]
    assert billing.revenue_per_day(
        session, viewer=operator, days=2, last_day=LAST_DAY, institution_id=banks[1].id
    ) == [RevenueDay(date(2031, 4, 9), debits=1, debit_fen=250, credit_fen=0)]
    assert billing.revenue_per_day(session, viewer=operator, days=1, last_day=date(2031, 4, 11)) == [
        RevenueDay(date(2031, 4, 11), debits=1, debit_fen=9999, credit_fen=0)
    ]


def test_an_institution_sees_its_own_revenue_only(session: Session, banks: tuple[Principal, Principal]) -> None:
    bank_a, bank_b = banks
    assert billing.revenue_per_day(
        session, viewer=bank_a, days=2, last_day=LAST_DAY, institution_id=bank_b.id
    ) == [
        RevenueDay(date(2031, 4, 9), debits=1, debit_fen=1000, credit_fen=0),
        RevenueDay(date(2031, 4, 10), debits=1, debit_fen=700, credit_fen=400),
    ]


def test_a_department_is_refused_and_the_window_is_bounded(session: Session) -> None:
    ensure_department(session, "revenue-dept")
    with pytest.raises(Forbidden):
        billing.revenue_per_day(
            session, viewer=session_principal(session, "department", supplier_id="revenue-dept"), days=7
        )
    with pytest.raises(InvalidSpec, match="days is 1 to 366"):
        billing.revenue_per_day(session, viewer=session_principal(session, roles=["curator"]), days=400)
