"""Usage per Shanghai day and product (the operator's dashboard, an institution's portal): exact
figures from usage events written here, days cut at Shanghai midnight, each viewer its own part."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

import datazone.billing.models  # noqa: F401  (usage_event.debit_id refers to ledger_entry)
from datazone.errors import Forbidden, InvalidSpec
from datazone.metering import service as metering
from datazone.metering.models import DEFAULT_PLAN_ID, UsageEvent
from datazone.metering.service import ProductDay
from datazone.principal.models import Principal
from tests.factories import ensure_department, make_uscc
from tests.factories import session_principal as principal

# a day no other test bills on: the figures below are all there is in the window
LAST_DAY = date(2031, 3, 10)


def bill(
    session: Session,
    bank: Principal,
    *,
    at: datetime,
    product_id: str,
    prices: list[int],
    free: int = 0,
    quantity: int = 1,
) -> None:
    """One call's usage events: one per enterprise at each price (the first `free` free), or one
    event of `quantity` units naming none."""
    call_id = uuid.uuid4()
    for i, price in enumerate(prices):
        session.add(
            UsageEvent(
                id=uuid.uuid4(),
                call_id=call_id,
                at=at,
                institution_id=bank.id,
                client_id="app-1",
                contract_id=1,
                plan_id=DEFAULT_PLAN_ID,
                product_id=product_id,
                purpose="pre_loan",
                uscc=make_uscc(i) if quantity == 1 else None,
                price_fen=price,
                free=i < free,
                quantity=quantity,
            )
        )
    session.flush()


@pytest.fixture
def billed(session: Session) -> tuple[Principal, Principal]:
    """Two banks' calls around Shanghai midnight of 2031-03-09/10 (16:00 UTC)."""
    bank_a, bank_b = principal(session, "institution"), principal(session, "institution")
    # 2031-03-09 23:59 in Shanghai
    bill(session, bank_a, at=datetime(2031, 3, 9, 15, 59, tzinfo=UTC), product_id="risk-insight",
         prices=[0, 500, 500], free=1)
    # 2031-03-10 00:00 in Shanghai
    bill(session, bank_a, at=datetime(2031, 3, 9, 16, 0, tzinfo=UTC), product_id="risk-insight", prices=[500])
    bill(session, bank_b, at=datetime(2031, 3, 10, 3, 0, tzinfo=UTC), product_id="risk-insight", prices=[300, 300])
    # a PSI set of 40 units at 2 fen, one event naming no enterprise
    bill(session, bank_b, at=datetime(2031, 3, 10, 4, 0, tzinfo=UTC), product_id="psi-match", prices=[2],
         quantity=40)
    # 2031-03-11 in Shanghai: after the window
    bill(session, bank_a, at=datetime(2031, 3, 10, 16, 0, tzinfo=UTC), product_id="risk-insight", prices=[500])
    # 2031-03-07 in Shanghai: before a 3-day window
    bill(session, bank_a, at=datetime(2031, 3, 7, 3, 0, tzinfo=UTC), product_id="risk-insight", prices=[500])
    return bank_a, bank_b


def test_the_operator_sees_every_institution_per_day_and_product(
    session: Session, billed: tuple[Principal, Principal]
) -> None:
    operator = principal(session, "operator", roles=["curator"])
    figures = metering.usage_per_product_day(session, viewer=operator, days=3, last_day=LAST_DAY)
    assert figures == [
        ProductDay(date(2031, 3, 9), "risk-insight", calls=1, units=3, free_units=1, charged_fen=1000),
        ProductDay(date(2031, 3, 10), "psi-match", calls=1, units=40, free_units=0, charged_fen=80),
        ProductDay(date(2031, 3, 10), "risk-insight", calls=2, units=3, free_units=0, charged_fen=1100),
    ]
    # one institution's, as the operator asks for it
    bank_b = billed[1]
    assert metering.usage_per_product_day(
        session, viewer=operator, days=3, last_day=LAST_DAY, institution_id=bank_b.id
    ) == [
        ProductDay(date(2031, 3, 10), "psi-match", calls=1, units=40, free_units=0, charged_fen=80),
        ProductDay(date(2031, 3, 10), "risk-insight", calls=1, units=2, free_units=0, charged_fen=600),
    ]
    # a 4-day window takes in the 7th
    assert metering.usage_per_product_day(session, viewer=operator, days=4, last_day=LAST_DAY)[0] == ProductDay(
        date(2031, 3, 7), "risk-insight", calls=1, units=1, free_units=0, charged_fen=500
    )


def test_an_institution_sees_its_own_usage_only(session: Session, billed: tuple[Principal, Principal]) -> None:
    bank_a, bank_b = billed
    assert metering.usage_per_product_day(
        session, viewer=bank_a, days=3, last_day=LAST_DAY, institution_id=bank_b.id
    ) == [
        ProductDay(date(2031, 3, 9), "risk-insight", calls=1, units=3, free_units=1, charged_fen=1000),
        ProductDay(date(2031, 3, 10), "risk-insight", calls=1, units=1, free_units=0, charged_fen=500),
    ]


def test_a_department_is_refused_and_windows_are_bounded(session: Session) -> None:
    ensure_department(session, "figures-dept")
    department = principal(session, "department", supplier_id="figures-dept")
    with pytest.raises(Forbidden):
        metering.usage_per_product_day(session, viewer=department, days=7)
    operator = principal(session, "operator", roles=["curator"])
    for days in (0, 367):
        with pytest.raises(InvalidSpec) as refused:
            metering.usage_per_product_day(session, viewer=operator, days=days)
        assert refused.value.errors == [{"location": "days", "problem": "must be between 1 and 366"}]
    assert metering.usage_per_product_day(session, viewer=operator, days=366, last_day=date(1990, 1, 1)) == []
