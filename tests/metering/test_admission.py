"""Admission and billing of product calls on the real database: free units then paid, rate
limits, and quotas and spend caps that hold to the unit under concurrent calls."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from datazone.access import gates
from datazone.db import Database
from datazone.metering import service as metering
from datazone.metering.service import QuotaExceeded, RateLimited, SpendCapReached
from tests.metering.builders import CallResult, call, catalog, committed_bank, contract_under_plan, totals

pytestmark = pytest.mark.usefixtures("catalog")
assert catalog  # the fixture is used by name


def race(db: Database, n: int, target: object, **kw: object) -> list[CallResult]:
    """`n` calls released together, each in its own thread and transaction."""
    barrier = threading.Barrier(n)
    results: list[CallResult] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        r = call(db, target, **kw)  # type: ignore[arg-type]
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == n
    return results


def test_free_units_first_then_the_price(db: Database) -> None:
    bank = committed_bank(db, free_units=3, free_period="day")
    r = call(db, bank, units=5, price_fen=500)
    assert r.error is None and r.admission is not None
    assert r.admission.charges_fen == [0, 0, 0, 500, 500]
    assert (r.admission.free_units, r.admission.charged_fen) == (3, 1000)
    assert [(e.free, e.price_fen) for e in r.events] == [(True, 0)] * 3 + [(False, 500)] * 2
    assert len({e.id for e in r.events}) == 5 and len({e.uscc for e in r.events}) == 5
    assert totals(db, bank.institution.id) == (5, 1000, 0)
    # the day's free units are used up: the next units are all charged
    r = call(db, bank, units=2, price_fen=500)
    assert r.admission is not None and r.admission.charges_fen == [500, 500]
    assert totals(db, bank.institution.id) == (7, 2000, 0)
    with db.unit_of_work() as s:
        day = metering.meter_reading(
            s, institution_id=bank.institution.id, period=metering.period_of(datetime.now(UTC), "day")
        )
    assert (day.units, day.free_units, day.charged_fen) == (7, 3, 2000)


def test_a_free_call_debits_nothing_and_keeps_the_free_units(db: Database) -> None:
    bank = committed_bank(db, free_units=2)
    r = call(db, bank, units=3, price_fen=0, product_id="credit-basic")
    assert r.admission is not None and r.admission.charges_fen == [0, 0, 0]
    assert [e.free for e in r.events] == [False] * 3  # a free product does not spend the allowance
    assert totals(db, bank.institution.id) == (3, 0, 0)
    r = call(db, bank, units=3, price_fen=700)
    assert r.admission is not None and r.admission.charges_fen == [0, 0, 700]


def test_the_plan_price_overrides_the_product_price(db: Database) -> None:
    bank = committed_bank(db, unit_price_fen=120)
    r = call(db, bank, units=4, price_fen=500)
    assert r.admission is not None and r.admission.charges_fen == [120] * 4
    assert totals(db, bank.institution.id) == (4, 480, 0)


def test_only_found_enterprises_are_billed_and_metered(db: Database) -> None:
    bank = committed_bank(db, free_units=3, quota_units=10, quota_period="day")
    r = call(db, bank, units=5, found=4, price_fen=500)
    assert r.error is None
    # the free units come first, so billing 4 of 5 keeps all 3 free ones
    assert [e.price_fen for e in r.events] == [0, 0, 0, 500]
    assert totals(db, bank.institution.id) == (4, 500, 0)
    # the unbilled unit went back to the quota: 6 remain, not 5
    r = call(db, bank, units=7)
    assert isinstance(r.error, QuotaExceeded) and r.error.extra["remaining"] == 6
    r = call(db, bank, units=6)
    assert r.error is None
    assert totals(db, bank.institution.id) == (10, 3500, 0)


def test_quota_refusal_says_when_it_renews_and_writes_nothing(db: Database) -> None:
    bank = committed_bank(db, quota_units=2, quota_period="day")
    assert call(db, bank, units=2).error is None
    r = call(db, bank, units=1)
    assert isinstance(r.error, QuotaExceeded)
    assert r.error.status == 429 and r.error.type == "quota-exceeded"
    p = r.error.problem()
    assert (p["used"], p["requested"], p["remaining"], p["quota_units"]) == (2, 1, 0, 2)
    renews = datetime.fromisoformat(p["renews_at"]).astimezone(metering.SHANGHAI)
    assert (renews.hour, renews.minute) == (0, 0) and renews > datetime.now(UTC)
    assert 0 < p["retry_after"] <= 86400
    assert p["headers"]["Retry-After"] == str(p["retry_after"])
    assert "renews at" in p["detail"] and bank.plan_id in p["detail"]
    assert totals(db, bank.institution.id) == (2, 1000, 0)


def test_monthly_quota_counts_across_days(db: Database) -> None:
    bank = committed_bank(db, quota_units=3, quota_period="month")
    now = datetime.now(UTC)
    month_start, _ = metering.month_bounds(metering.month_of(now))
    first_day = month_start + timedelta(hours=1)
    assert call(db, bank, units=2, at=first_day if first_day < now else now).error is None
    r = call(db, bank, units=2, at=now)
    assert isinstance(r.error, QuotaExceeded) and r.error.extra["remaining"] == 1
    assert r.error.extra["quota_period"] == "month"


def test_exact_quota_when_twenty_calls_race_for_the_last_seven_units(db: Database) -> None:
    bank = committed_bank(db, quota_units=10, quota_period="day")
    assert call(db, bank, units=3).error is None
    results = race(db, 20, bank, units=1, price_fen=500)
    admitted = [r for r in results if r.error is None]
    refused = [r for r in results if r.error is not None]
    assert len(admitted) == 7
    assert all(isinstance(r.error, QuotaExceeded) for r in refused) and len(refused) == 13
    assert totals(db, bank.institution.id) == (10, 10 * 500, 0)


def test_exact_spend_cap_when_twenty_calls_race_for_the_last_seven_units(db: Database) -> None:
    bank = committed_bank(db, monthly_cap_fen=5000)
    assert call(db, bank, units=3, price_fen=500).error is None
    results = race(db, 20, bank, units=1, price_fen=500)
    admitted = [r for r in results if r.error is None]
    refused = [r.error for r in results if r.error is not None]
    assert len(admitted) == 7
    assert len(refused) == 13 and all(isinstance(e, SpendCapReached) for e in refused)
    e = refused[0]
    assert e is not None and e.status == 402 and e.type == "spend-cap-reached"
    assert (e.extra["spent_fen"], e.extra["call_fen"], e.extra["monthly_cap_fen"]) == (5000, 500, 5000)
    assert totals(db, bank.institution.id) == (10, 5000, 0)
    # a free unit is still admitted under a reached cap: it costs nothing
    assert call(db, bank, units=1, price_fen=0, product_id="credit-basic").error is None


def test_a_call_that_would_cross_the_cap_is_refused_whole(db: Database) -> None:
    bank = committed_bank(db, monthly_cap_fen=1200)
    r = call(db, bank, units=3, price_fen=500)
    assert isinstance(r.error, SpendCapReached) and r.error.extra["call_fen"] == 1500
    assert "1500 fen" in r.error.detail and "raise it" in r.error.detail
    assert totals(db, bank.institution.id) == (0, 0, 0)
    assert call(db, bank, units=2, price_fen=500).error is None


def test_rate_limit_burst_then_refill(db: Database) -> None:
    # one call a second refills slowly enough that 8 calls fit in the burst's second even on a
    # loaded machine (at 5 a second, a slow run saw a sixth call admitted)
    bank = committed_bank(db, rate_per_second=1.0, burst=5)
    results = [call(db, bank, units=1) for _ in range(8)]
    admitted = [r.admission for r in results if r.admission is not None]
    refused = [r.error for r in results if r.error is not None]
    assert len(admitted) == 5 and len(refused) == 3
    assert [a.headers["RateLimit-Remaining"] for a in admitted] == ["4", "3", "2", "1", "0"]
    for a in admitted:
        assert a.headers["RateLimit-Limit"] == "5"
        assert a.headers["RateLimit-Policy"] == "5;w=5"
        assert 0 <= int(a.headers["RateLimit-Reset"]) <= 5
    for e in refused:
        assert isinstance(e, RateLimited) and e.status == 429 and e.type == "rate-limited"
        assert 0 < e.extra["retry_after"] <= 1.0
        h = e.extra["headers"]
        assert h["Retry-After"] == "1" and h["RateLimit-Remaining"] == "0" and h["RateLimit-Limit"] == "5"
    assert totals(db, bank.institution.id)[0] == 5  # refusals bill nothing
    last = refused[-1]
    assert last is not None
    time.sleep(last.extra["retry_after"])
    again = call(db, bank, units=1)
    assert again.error is None, again.error


def test_rate_limit_is_one_meter_across_clients_and_replicas(db: Database) -> None:
    """Two engines stand for two gateway replicas; two client ids for two apps of one bank."""
    bank = committed_bank(db, rate_per_second=1.0, burst=2)
    other_replica = Database(db.url)
    try:
        assert call(db, bank, client_id="app-1").error is None
        assert call(other_replica, bank, client_id="app-2").error is None
        r = call(other_replica, bank, client_id="app-3")
        assert isinstance(r.error, RateLimited)
        assert isinstance(call(db, bank, client_id="app-1").error, RateLimited)
    finally:
        other_replica.dispose()


def test_one_plan_cannot_throttle_another_contract_of_the_same_institution(db: Database) -> None:
    """A slow private plan (one call per 100 s) on one contract, the bank's fast plan on another: the
    slow contract's calls are limited, and the fast contract's calls are not slowed by them."""
    fast = committed_bank(db, products=("credit-basic",), rate_per_second=1000.0, burst=1000)
    slow = contract_under_plan(db, fast, products=("risk-insight",), rate_per_second=0.01, burst=1)
    assert call(db, slow).error is None
    refused = call(db, slow).error
    assert isinstance(refused, RateLimited)
    assert refused.extra["plan_id"] == slow.plan_id and refused.extra["contract_id"] == slow.contract_id
    assert refused.extra["headers"]["RateLimit-Limit"] == "1"
    results = [call(db, fast, product_id="credit-basic") for _ in range(20)]
    assert [r.error for r in results] == [None] * 20
    admitted = [r.admission for r in results if r.admission is not None]
    # the fast plan's own headers: its burst, not the slow plan's
    assert {a.headers["RateLimit-Limit"] for a in admitted} == {"1000"}
    assert int(admitted[-1].headers["RateLimit-Remaining"]) >= 980
    # and the other way round: the fast contract's calls did not use the slow one's allowance up further
    assert isinstance(call(db, slow).error, RateLimited)


def test_admission_refuses_nonsense_from_the_gateway(db: Database) -> None:
    bank = committed_bank(db)
    with db.unit_of_work() as s, pytest.raises(ValueError, match="timezone-aware"):
        metering.admit(
            s,
            institution_id=bank.institution.id,
            contract_id=bank.contract_id,
            plan_id=bank.plan_id,
            product_id="risk-insight",
            product_price_fen=1,
            units=1,
            at=datetime(2026, 1, 1),
        )
    r = call(db, bank, units=2)
    assert r.admission is not None
    with db.unit_of_work() as s, pytest.raises(ValueError, match="only 2 admitted"):
        gates.bill(
            s,
            metering.BilledCall(
                admission=r.admission,
                institution_id=bank.institution.id,
                client_id="x",
                product_id="risk-insight",
                purpose="pre_loan",
                usccs_billed=["a", "b", "c"],
                idempotency_key=None,
                fingerprint=None,
                status=200,
                body={},
                headers={},
                at=datetime.now(UTC),
            ),
        )


def test_units_naming_no_enterprise_are_one_event_per_price_and_add_up_exactly(db: Database) -> None:
    """A PSI set of 100,000 items with 3 free units left: two events (3 free, 99,997 paid) instead
    of 100,000 rows, and every reading (meter, usage by day, statement lines, CloudEvents) counts
    100,000 units and 99,997 x the price."""
    bank = committed_bank(db, free_units=3, free_period="day")
    n, price = 100_000, 2
    at = datetime.now(UTC)
    with db.unit_of_work() as s:
        admission = metering.admit(
            s, institution_id=bank.institution.id, contract_id=bank.contract_id, plan_id=bank.plan_id,
            product_id="risk-insight", product_price_fen=price, units=n, at=at,
        )
        events = gates.bill(
            s,
            metering.BilledCall(
                admission=admission, institution_id=bank.institution.id, client_id="psi-app",
                product_id="risk-insight", purpose="pre_loan", usccs_billed=[None] * n,
                idempotency_key=None, fingerprint=None, status=201, body={}, headers={}, at=at,
            ),
        )
    assert sorted((e.quantity, e.price_fen, e.free) for e in events) == [(3, 0, True), (n - 3, price, False)]
    assert totals(db, bank.institution.id) == (2, (n - 3) * price, 0)  # two rows, the exact debit
    with db.unit_of_work() as s:
        reading = metering.meter_reading(s, institution_id=bank.institution.id, period=admission.day)
        assert (reading.units, reading.free_units, reading.charged_fen) == (n, 3, (n - 3) * price)
        [line] = metering.units_by_product(
            s, institution_id=bank.institution.id, since=at - timedelta(seconds=1), until=at + timedelta(seconds=1)
        )
        assert (line.units, line.free_units, line.charged_fen) == (n, 3, (n - 3) * price)
        [day] = metering.usage_by_day(s, viewer=bank.institution, since=at - timedelta(seconds=1),
                                      until=at + timedelta(seconds=1))
        assert (day.calls, day.units, day.free_units, day.charged_fen) == (1, n, 3, (n - 3) * price)
        exported = metering.list_usage_events(s, viewer=bank.institution)
    data = [metering.usage_cloudevent(e).get_data() for e in exported]
    assert sum(d["quantity"] for d in data) == n  # type: ignore[index]
    assert sum(d["amount_fen"] for d in data) == (n - 3) * price  # type: ignore[index]
