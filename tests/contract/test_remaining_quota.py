"""What an institution's plans leave it this period: read from the counters real admissions wrote,
and in agreement with the next admission's own refusal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from datazone.contract import service
from datazone.contract.models import Contract
from datazone.errors import Forbidden, InvalidSpec
from datazone.metering import service as metering
from datazone.metering.service import QuotaExceeded
from datazone.principal.models import Principal
from tests.factories import ensure_department, session_principal
from tests.grant.builders import days, now

pytestmark = pytest.mark.usefixtures("catalog")


def sign(session: Session, bank: Principal, curator: Principal, *, plan_id: str, **kw: object) -> Contract:
    args: dict[str, object] = {
        "institution_id": bank.id,
        "purposes": ["pre_loan"],
        "products": ["risk-insight"],
        "valid_from": now() - days(1),
        "valid_to": now() + days(365),
        "plan_id": plan_id,
        "by": curator,
    }
    args.update(kw)
    return service.create_contract(session, **args)  # type: ignore[arg-type]


def admit(session: Session, contract: Contract, *, units: int, at: datetime) -> metering.Admission:
    return metering.admit(
        session,
        institution_id=contract.institution_id,
        contract_id=contract.id,
        plan_id=contract.plan_id,
        product_id="risk-insight",
        product_price_fen=500,
        units=units,
        at=at,
    )


def test_remaining_quota_is_what_admission_counts_and_refuses_past(session: Session) -> None:
    curator = session_principal(session, roles=["curator"])
    bank = session_principal(session, "institution")
    daily = metering.create_plan(
        session, plan_id=f"daily-{bank.id}", name="daily", institution_id=bank.id, free_units=3,
        free_period="month", monthly_cap_fen=10_000, quota_units=10, quota_period="day",
        rate_per_second=1000, burst=1000, by=curator,
    )
    monthly = metering.create_plan(
        session, plan_id=f"monthly-{bank.id}", name="monthly", institution_id=bank.id,
        quota_units=100, quota_period="month", rate_per_second=1000, burst=1000, by=curator,
    )
    first = sign(session, bank, curator, plan_id=daily.id)
    second = sign(session, bank, curator, plan_id=monthly.id, products=["credit-basic"])
    ended = sign(session, bank, curator, plan_id=daily.id)
    service.terminate_contract(session, contract_id=ended.id, by=curator, reason="replaced")
    at = datetime.now(UTC)
    # 4 units: the 3 free units of the month, then 1 at 500 fen
    assert admit(session, first, units=4, at=at).charged_fen == 500

    left = service.remaining_quota(session, viewer=bank, at=at)
    assert [c.contract_id for c in left] == [first.id, second.id]  # a terminated contract is not
    quota = left[0].allowance
    assert (quota.plan_id, quota.quota_units, quota.quota_period, quota.quota_counted) == (
        daily.id, 10, "day", metering.period_of(at, "day"),
    )
    assert (quota.quota_used, quota.quota_remaining) == (4, 6)
    assert quota.quota_renews_at == metering.period_end(at, "day")
    assert (quota.free_units, quota.free_used, quota.free_remaining) == (3, 3, 0)
    assert (quota.month, quota.monthly_cap_fen, quota.spent_fen, quota.cap_remaining_fen) == (
        metering.month_of(at), 10_000, 500, 9_500,
    )
    # the institution's counters serve every plan: the monthly plan's quota counts the same 4 units
    other = left[1].allowance
    assert (other.quota_units, other.quota_used, other.quota_remaining, other.cap_remaining_fen) == (100, 4, 96, None)
    assert (other.free_units, other.free_remaining) == (0, 0)

    # admission agrees: 7 more units are refused with 6 remaining, 6 are admitted, then none remain
    with pytest.raises(QuotaExceeded) as refused:
        admit(session, first, units=7, at=at)
    assert refused.value.extra["remaining"] == 6
    admit(session, first, units=6, at=at)
    after = service.remaining_quota(session, viewer=bank, at=at)[0].allowance
    assert (after.quota_used, after.quota_remaining, after.spent_fen, after.cap_remaining_fen) == (10, 0, 3500, 6500)


def test_who_may_read_remaining_quota(session: Session) -> None:
    curator = session_principal(session, roles=["curator"])
    bank, other_bank = session_principal(session, "institution"), session_principal(session, "institution")
    contract = sign(session, bank, curator, plan_id=metering.default_plan_id())
    at = datetime.now(UTC)
    # the operator names the institution; the default public plan has no quota and no cap
    [seen] = service.remaining_quota(session, viewer=curator, institution_id=bank.id, at=at)
    assert (seen.contract_id, seen.plan_id, seen.allowance.quota_remaining, seen.allowance.cap_remaining_fen) == (
        contract.id, metering.default_plan_id(), None, None,
    )
    with pytest.raises(InvalidSpec):
        service.remaining_quota(session, viewer=curator)
    # an institution reads its own whatever it names
    assert service.remaining_quota(session, viewer=other_bank, institution_id=bank.id, at=at) == []
    ensure_department(session, "quota-dept")
    with pytest.raises(Forbidden):
        service.remaining_quota(session, viewer=session_principal(session, "department", supplier_id="quota-dept"))
