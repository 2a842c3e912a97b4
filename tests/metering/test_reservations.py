"""Admission reserves units in a transaction of its own: an institution's concurrent calls wait on
each other for that one statement only, never overshoot a quota, and a call that does not commit
gives its units back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from datazone.db import Database
from datazone.metering import service as metering
from datazone.metering.service import Admission, QuotaExceeded
from tests.metering.builders import Bank, call, catalog, committed_bank

pytestmark = pytest.mark.usefixtures("catalog")
assert catalog  # the fixture is used by name

# a hang detector, far above the few milliseconds an admission takes
HANG_SECONDS = 30


def admit(session: Session, bank: Bank, units: int) -> Admission:
    return metering.admit(
        session,
        institution_id=bank.institution.id,
        contract_id=bank.contract_id,
        plan_id=bank.plan_id,
        product_id="risk-insight",
        product_price_fen=500,
        units=units,
        at=datetime.now(UTC),
    )


def reading(db: Database, bank: Bank) -> metering.MeterReading:
    with db.unit_of_work() as s:
        return metering.meter_reading(
            s, institution_id=bank.institution.id, period=metering.period_of(datetime.now(UTC), "day")
        )


def test_a_call_of_the_same_institution_is_admitted_while_another_is_still_open(db: Database) -> None:
    bank = committed_bank(db, quota_units=10, quota_period="day")
    first = db.session()
    try:
        admit(first, bank, 3)  # admitted, its transaction still open (the old meter lock was held here)
        outcome: list[object] = []

        def second() -> None:
            with db.unit_of_work() as s:
                outcome.append(admit(s, bank, 2))

        t = threading.Thread(target=second)
        t.start()
        t.join(HANG_SECONDS)
        assert not t.is_alive(), "the second call waited for the first call's commit"
        assert isinstance(outcome[0], Admission) and outcome[0].units == 2
        # both count at once: the open call's units are held, so the quota cannot be overshot
        assert reading(db, bank).units == 5
        with pytest.raises(QuotaExceeded) as refused, db.unit_of_work() as s:
            admit(s, bank, 6)
        assert refused.value.extra["remaining"] == 5
    finally:
        first.rollback()
        first.close()
    # the open call rolled back: its 3 units went back to the quota
    assert reading(db, bank).units == 2


def test_units_admitted_but_not_billed_go_back_and_billed_ones_stay(db: Database) -> None:
    bank = committed_bank(db, free_units=2, quota_units=10, quota_period="day")
    r = call(db, bank, units=6, found=3, price_fen=500)
    assert r.error is None
    day = reading(db, bank)
    # 6 admitted, 3 billed (2 of them free): the meter keeps exactly what was billed
    assert (day.units, day.free_units, day.charged_fen) == (3, 2, 500)


def test_a_failure_after_admission_gives_every_unit_back(db: Database) -> None:
    bank = committed_bank(db, quota_units=4, quota_period="day", monthly_cap_fen=2000)
    with pytest.raises(RuntimeError, match="the answer could not be stored"), db.unit_of_work() as s:
        admit(s, bank, 4)
        raise RuntimeError("the answer could not be stored")
    day = reading(db, bank)
    assert (day.units, day.charged_fen) == (0, 0)
    # the whole quota and cap are there again
    assert call(db, bank, units=4, price_fen=500).error is None
    assert reading(db, bank).units == 4


def test_twenty_racing_calls_of_one_institution_all_finish_and_fill_the_quota_exactly(db: Database) -> None:
    bank = committed_bank(db, quota_units=13, quota_period="day")
    barrier = threading.Barrier(20)
    errors: list[object] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        r = call(db, bank, units=1, price_fen=500)
        with lock:
            errors.append(r.error)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_SECONDS)
    assert len(errors) == 20
    assert sum(e is None for e in errors) == 13
    assert all(isinstance(e, QuotaExceeded) for e in errors if e is not None)
    assert reading(db, bank).units == 13
