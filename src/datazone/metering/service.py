"""Metering: plans, admission of product calls (rate limit, quota, free units, price, spend cap),
usage events, and idempotent answers.

The call pipeline (`access.pipeline`) calls, in the request's one transaction:

    fp = fingerprint(method, path, query, body)
    stored = begin_idempotent(session, institution_id=.., key=.., fingerprint=fp)   # replay if not None
    admission = admit(session, institution_id=.., contract_id=.., plan_id=.., product_id=..,
                      product_price_fen=.., units=<batch size>, at=..)
    ... compute the answer ...
    charge = charge_of(admission, units=<found>)      # the pipeline posts the ledger debit for it
    record_usage(session, call=BilledCall(admission, ..., usccs_billed=<found enterprises>, ...), debit_id=..)

This domain imports neither contracts nor billing: the pipeline passes the contract's plan and
the debit it posted.

`admit` decides and counts the call in one statement (`meter_admit`, in PostgreSQL) in a transaction
of its own, committed at once: the next call of the same institution, on any replica, decides on
counters that already include this one, so quotas and caps hold to the unit, and it waits for that one
statement only, not for this request's commit. The admitted units are a reservation held for the
request's transaction: `record_usage` gives back what was admitted but not billed (enterprises not
found), and a rolled-back transaction gives back all of it. A crash between the two can leave units
counted that were never billed: the counters err high (a refusal too early), never low.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, aliased

from datazone.audit import service as audit_service
from datazone.config import get_settings
from datazone.db import autonomous, shanghai_date
from datazone.errors import Conflict, DomainError, Forbidden, InvalidSpec, NotFound
from datazone.limits import day_window
from datazone.metering.models import (
    DEFAULT_PLAN_ID,
    PERIODS,
    IdempotentAnswer,
    MeterCount,
    Plan,
    UsageEvent,
)
from datazone.observability import metrics
from datazone.principal import service as principal_service
from datazone.principal.models import Principal

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
PLAN_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# RFC 9110 visible ASCII, no spaces
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
USAGE_EVENT_TYPE = "zone.datazone.usage.v1"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"
MAX_EVENTS_PAGE = 10_000


# ---------------------------------------------------------------- errors


class InvalidPlan(InvalidSpec):
    type = "invalid-plan"
    title = "The plan is not valid"


class IdempotencyKeyReused(InvalidSpec):
    type = "idempotency-key-reused"
    title = "The Idempotency-Key was used for a different request"


class RateLimited(DomainError):
    status = 429
    type = "rate-limited"
    title = "Too many requests"


class QuotaExceeded(DomainError):
    status = 429
    type = "quota-exceeded"
    title = "The plan's quota is used up"


class SpendCapReached(DomainError):
    status = 402
    type = "spend-cap-reached"
    title = "The plan's monthly spend cap is reached"


# ---------------------------------------------------------------- time


def _now() -> datetime:
    return datetime.now(UTC)


def shanghai_day(at: datetime) -> date:
    return at.astimezone(SHANGHAI).date()


def period_of(at: datetime, period: str) -> str:
    """The Shanghai day ('YYYY-MM-DD') or month ('YYYY-MM') `at` falls in."""
    local = at.astimezone(SHANGHAI)
    return local.strftime("%Y-%m-%d") if period == "day" else local.strftime("%Y-%m")


def month_of(at: datetime) -> str:
    return period_of(at, "month")


def period_end(at: datetime, period: str) -> datetime:
    """When the Shanghai day or month containing `at` ends (UTC)."""
    local = at.astimezone(SHANGHAI)
    if period == "day":
        start = datetime(local.year, local.month, local.day, tzinfo=SHANGHAI)
        return (start + timedelta(days=1)).astimezone(UTC)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=SHANGHAI).astimezone(UTC)


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """The UTC start and end of a Shanghai month 'YYYY-MM'."""
    start = datetime(int(period[:4]), int(period[5:7]), 1, tzinfo=SHANGHAI)
    return start.astimezone(UTC), period_end(start, "month")


def _period_seconds(at: datetime, period: str) -> int:
    local = at.astimezone(SHANGHAI)
    start = datetime(local.year, local.month, 1 if period == "month" else local.day, tzinfo=SHANGHAI)
    return round((period_end(at, period) - start.astimezone(UTC)).total_seconds())


# ---------------------------------------------------------------- plans



def plan_problems(
    session: Session,
    *,
    plan_id: str,
    name: str,
    institution_id: int | None,
    free_units: int,
    free_period: str,
    unit_price_fen: int | None,
    monthly_cap_fen: int | None,
    quota_units: int | None,
    quota_period: str | None,
    rate_per_second: float,
    burst: int,
) -> list[dict[str, Any]]:
    """Every problem with a plan's values, each as {location, problem}."""
    errors: list[dict[str, Any]] = []

    def problem(location: str, text: str) -> None:
        errors.append({"location": location, "problem": text})

    if not PLAN_ID_PATTERN.fullmatch(plan_id):
        problem(
            "id", f"{plan_id!r} is not a plan id: 1-64 of a-z, 0-9 and '-', starting with a letter or digit"
        )
    elif session.get(Plan, plan_id) is not None:
        problem("id", f"a plan {plan_id!r} exists already; plans are not changed once contracts may use them")
    if not name.strip():
        problem("name", "give the plan a name")
    if institution_id is not None:
        try:
            principal = principal_service.get_principal(session, principal_id=institution_id)
        except NotFound:
            problem("institution_id", f"no principal {institution_id}; leave it empty for a public plan")
        else:
            if principal.kind != "institution":
                problem(
                    "institution_id",
                    f"principal {institution_id} ({principal.name}) is {principal_service.a_kind(principal.kind)}"
                    ", not an institution; a private plan is negotiated with an institution",
                )
    if free_units < 0:
        problem("free_units", f"free_units is a number of units, 0 or more, not {free_units}")
    if free_period not in PERIODS:
        problem("free_period", f"free_period is day or month (Asia/Shanghai calendar), not {free_period!r}")
    if unit_price_fen is not None and unit_price_fen < 0:
        problem(
            "unit_price_fen",
            f"a price is 0 fen or more, not {unit_price_fen}; leave it empty to charge each product's own price",
        )
    if monthly_cap_fen is not None and monthly_cap_fen < 0:
        problem("monthly_cap_fen", f"a spend cap is 0 fen or more, not {monthly_cap_fen}; empty: no cap")
    if quota_units is not None and quota_units < 0:
        problem("quota_units", f"a quota is 0 units or more, not {quota_units}; empty: no quota")
    if quota_units is not None and quota_period is None:
        problem("quota_period", "a quota needs its period: day or month")
    if quota_period is not None:
        if quota_period not in PERIODS:
            problem("quota_period", f"quota_period is day or month, not {quota_period!r}")
        elif quota_units is None:
            problem("quota_units", f"quota_period {quota_period} is given but quota_units is not")
    if not (math.isfinite(rate_per_second) and rate_per_second > 0):
        problem("rate_per_second", f"rate_per_second must be a number above 0, not {rate_per_second}")
    if burst < 1:
        problem("burst", f"burst is the number of calls allowed at once, at least 1, not {burst}")
    return errors


def create_plan(
    session: Session,
    *,
    plan_id: str,
    name: str,
    institution_id: int | None = None,
    free_units: int = 0,
    free_period: str = "day",
    unit_price_fen: int | None = None,
    monthly_cap_fen: int | None = None,
    quota_units: int | None = None,
    quota_period: str | None = None,
    rate_per_second: float,
    burst: int,
    by: Principal,
) -> Plan:
    """Create a public plan (institution_id None) or a private one for one institution.

    Every problem is listed at once; nothing is written on any."""
    principal_service.require_role(by, "curator", "create plans")
    errors = plan_problems(
        session,
        plan_id=plan_id,
        name=name,
        institution_id=institution_id,
        free_units=free_units,
        free_period=free_period,
        unit_price_fen=unit_price_fen,
        monthly_cap_fen=monthly_cap_fen,
        quota_units=quota_units,
        quota_period=quota_period,
        rate_per_second=rate_per_second,
        burst=burst,
    )
    if errors:
        taken = [e for e in errors if e["location"] == "id" and "exists already" in e["problem"]]
        if taken and len(errors) == 1:
            raise Conflict(taken[0]["problem"], plan_id=plan_id)
        raise InvalidPlan(
            "the plan is not valid, nothing was written: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in errors),
            errors=errors,
        )
    plan = Plan(
        id=plan_id,
        name=name.strip(),
        institution_id=institution_id,
        free_units=free_units,
        free_period=free_period,
        unit_price_fen=unit_price_fen,
        monthly_cap_fen=monthly_cap_fen,
        quota_units=quota_units,
        quota_period=quota_period,
        rate_per_second=float(rate_per_second),
        burst=burst,
        created_by=by.id,
    )
    session.add(plan)
    session.flush()
    audit_service.record(
        session,
        actor=by,
        action="plan.create",
        object_type="plan",
        object_id=plan.id,
        institution_id=institution_id,
        detail=plan_terms(plan),
    )
    return plan


def plan_terms(plan: Plan) -> dict[str, Any]:
    return {
        "name": plan.name,
        "institution_id": plan.institution_id,
        "free_units": plan.free_units,
        "free_period": plan.free_period,
        "unit_price_fen": plan.unit_price_fen,
        "monthly_cap_fen": plan.monthly_cap_fen,
        "quota_units": plan.quota_units,
        "quota_period": plan.quota_period,
        "rate_per_second": plan.rate_per_second,
        "burst": plan.burst,
    }


def _plans_visible(viewer: Principal) -> sa.ColumnElement[bool]:
    """Plans an institution may read: the public ones and its own; the operator all."""
    if viewer.kind == "institution":
        return sa.or_(Plan.institution_id.is_(None), Plan.institution_id == viewer.id)
    return sa.true()


def get_plan(session: Session, *, plan_id: str, viewer: Principal | None = None) -> Plan:
    """A plan the viewer may see (None: the system): the operator any, an institution the public
    ones and its own (404 for another's private plan, so its existence does not leak)."""
    if viewer is not None and viewer.kind == "department":
        raise Forbidden("plans are between the operator and institutions; a department sees none")
    q = sa.select(Plan).where(Plan.id == plan_id)
    if viewer is not None:
        q = q.where(_plans_visible(viewer))
    plan = session.scalar(q)
    if plan is None:
        raise NotFound(f"no plan {plan_id!r}; list the plans with GET /v1/plans")
    return plan


def list_plans(session: Session, *, viewer: Principal, institution_id: int | None = None) -> list[Plan]:
    if viewer.kind == "department":
        raise Forbidden("plans are between the operator and institutions; a department sees none")
    q = sa.select(Plan).where(_plans_visible(viewer)).order_by(Plan.institution_id.nulls_first(), Plan.id)
    if viewer.kind == "operator" and institution_id is not None:
        q = q.where(sa.or_(Plan.institution_id.is_(None), Plan.institution_id == institution_id))
    return list(session.scalars(q))


def default_plan_id() -> str:
    """The public plan a contract gets when it names none (created by the migration)."""
    return DEFAULT_PLAN_ID


def contract_plan_problem(session: Session, *, plan_id: str, institution_id: int) -> str | None:
    """Why a contract of `institution_id` may not use `plan_id`, or None when it may."""
    plan = session.get(Plan, plan_id)
    if plan is None:
        return (
            f"no plan {plan_id!r}; create it with POST /v1/plans or leave plan_id empty for {DEFAULT_PLAN_ID}"
        )
    if plan.institution_id is not None and plan.institution_id != institution_id:
        return (
            f"plan {plan_id!r} is a private plan of institution {plan.institution_id}; a contract may use a "
            "public plan or its own institution's private plan"
        )
    return None


# ---------------------------------------------------------------- idempotency


@dataclass(frozen=True)
class StoredAnswer:
    """The answer given the first time a key was used: replay it as it was, free."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """SHA-256 (hex) of a request: method, path, query (parameter order ignored) and body bytes."""
    canonical_query = urlencode(sorted(parse_qsl(query, keep_blank_values=True)))
    digest = hashlib.sha256()
    for part in (
        method.upper().encode(),
        path.encode(),
        canonical_query.encode(),
        hashlib.sha256(body).digest(),
    ):
        # length-prefixed so that no two different requests run together into the same bytes
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def idempotency_key_problem(key: str) -> str | None:
    if IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        return None
    if not key:
        return "the Idempotency-Key is empty; send 1-255 visible ASCII characters, e.g. a UUID"
    if len(key) > 255:
        return f"the Idempotency-Key is {len(key)} characters long; send at most 255, e.g. a UUID"
    return (
        "the Idempotency-Key holds spaces, control or non-ASCII characters; send visible ASCII, e.g. a UUID"
    )


def begin_idempotent(
    session: Session,
    *,
    institution_id: int,
    key: str,
    fingerprint: str,
    keep_hours: float | None = None,
) -> StoredAnswer | None:
    """Claim `key` for this request, or give back the answer stored under it.

    None: go ahead; a pending row for (institution, key) now exists in this transaction, and a
    concurrent request with the same key waits on it until this one commits (then gets the stored
    answer) or rolls back (then goes ahead itself). A stored answer older than `keep_hours`
    (default: settings.idempotency_hours) is forgotten and the key may be used anew.
    Raises IdempotencyKeyReused when the key was used for a different request, InvalidSpec for a
    malformed key.
    """
    if (why := idempotency_key_problem(key)) is not None:
        raise InvalidSpec(why, errors=[{"location": "header Idempotency-Key", "problem": why}])
    if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
        raise ValueError("fingerprint must be fingerprint()'s sha256 hex digest")
    keep = timedelta(hours=keep_hours if keep_hours is not None else get_settings().idempotency_hours)
    now = _now()
    # a pending row: the unique key makes a concurrent INSERT of the same key wait for this transaction
    claimed = session.execute(
        pg_insert(IdempotentAnswer)
        .values(institution_id=institution_id, key=key, fingerprint=fingerprint, created_at=now)
        .on_conflict_do_nothing(index_elements=["institution_id", "key"])
        .returning(IdempotentAnswer.key)
    ).first()
    if claimed is not None:
        return None
    row = session.scalar(
        sa.select(IdempotentAnswer)
        .where(IdempotentAnswer.institution_id == institution_id, IdempotentAnswer.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:  # purged between the two statements: claim it afresh
        return begin_idempotent(
            session, institution_id=institution_id, key=key, fingerprint=fingerprint, keep_hours=keep_hours
        )
    expired = row.created_at < now - keep
    # status NULL on a committed row: that call ended without an answer to replay, so take it over
    if expired or row.status is None:
        row.fingerprint = fingerprint
        row.status = None
        row.body = None
        row.headers = None
        row.created_at = now
        session.flush()
        return None
    if row.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"the Idempotency-Key {key!r} was used at {row.created_at.isoformat()} for a different request "
            "(method, path, query or body differ); send a new key for a new request, or the same request "
            "to get its answer again",
            idempotency_key=key,
        )
    return StoredAnswer(status=row.status, body=dict(row.body or {}), headers=dict(row.headers or {}))


def store_answer(
    session: Session,
    *,
    institution_id: int,
    key: str,
    fingerprint: str,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
) -> None:
    """Keep the answer given under `key` for replay (record_usage does this for billed answers)."""
    stmt = pg_insert(IdempotentAnswer).values(
        institution_id=institution_id,
        key=key,
        fingerprint=fingerprint,
        status=status,
        body=body,
        headers=headers,
        created_at=_now(),
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["institution_id", "key"],
            set_={
                "status": stmt.excluded.status,
                "body": stmt.excluded.body,
                "headers": stmt.excluded.headers,
            },
        )
    )


def purge_idempotent(session: Session, *, before: datetime) -> int:
    """Forget answers stored before `before` (e.g. now - idempotency_hours); returns how many."""
    result = session.execute(
        sa.delete(IdempotentAnswer).where(
            IdempotentAnswer.created_at < before, IdempotentAnswer.status.is_not(None)
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- admission


@dataclass(frozen=True)
class Admission:
    """What `admit` allowed: up to `units` units, unit i charged `charges_fen[i]`.

    Free units come first, so billing fewer units (the found enterprises) keeps every free unit
    the plan still had: the first n charges are exactly what n units cost."""

    institution_id: int
    contract_id: int
    plan_id: str
    product_id: str
    units: int
    unit_price_fen: int
    charges_fen: list[int]
    free_units: int
    headers: dict[str, str]
    at: datetime
    day: str
    month: str
    # the key of what this admission holds on the counters (see Reservation)
    reservation_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def charged_fen(self) -> int:
        return sum(self.charges_fen)


def _seconds_up(delta: timedelta) -> int:
    return max(0, math.ceil(delta.total_seconds() - 1e-9))


def _rate_headers(
    plan: PlanTerms, *, limit_window: timedelta, remaining: int, reset: timedelta, at: datetime
) -> dict[str, str]:
    """RateLimit-* per draft-ietf-httpapi-ratelimit-headers: the burst is the limit, refilled at the
    plan's rate; the policy lists the rate window and, with a quota, the quota's period."""
    policy = [f"{plan.burst};w={max(1, _seconds_up(limit_window))}"]
    if plan.quota_units is not None and plan.quota_period is not None:
        policy.append(f'{plan.quota_units};w={_period_seconds(at, plan.quota_period)};comment="quota"')
    return {
        "RateLimit-Limit": str(plan.burst),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": str(_seconds_up(reset)),
        "RateLimit-Policy": ", ".join(policy),
    }


@dataclass(frozen=True)
class PlanTerms:
    """The terms admission reads from a plan."""

    id: str
    rate_per_second: float
    burst: int
    quota_units: int | None
    quota_period: str | None
    free_units: int
    free_period: str
    unit_price_fen: int | None
    monthly_cap_fen: int | None


# A plan is never changed once created (new terms are a new plan, which a contract then names), so
# its terms may be kept in memory: nothing a revocation must override lives here. Keyed by database
# too, for a process that talks to several (the tests).
_PLAN_TERMS: dict[tuple[str, str], PlanTerms] = {}
_PLAN_TERMS_MAX = 4096


def _plan(session: Session, plan_id: str) -> PlanTerms:
    database = str(session.get_bind().engine.url)
    terms = _PLAN_TERMS.get((database, plan_id))
    if terms is not None:
        return terms
    plan = session.get(Plan, plan_id)
    if plan is None:  # a contract's foreign key makes this unreachable short of a damaged database
        raise NotFound(f"no plan {plan_id!r}")
    terms = PlanTerms(
        plan.id, plan.rate_per_second, plan.burst, plan.quota_units, plan.quota_period, plan.free_units,
        plan.free_period, plan.unit_price_fen, plan.monthly_cap_fen,
    )
    if len(_PLAN_TERMS) >= _PLAN_TERMS_MAX:
        _PLAN_TERMS.clear()
    _PLAN_TERMS[(database, plan_id)] = terms
    return terms


# One round trip decides and counts the call (see the migration that defines meter_admit): the rate
# limit, quota, free units and spend cap, in a transaction of its own, so the counters' locks are held
# for that one statement and not until the caller's commit.
_ADMIT = sa.text(
    "SELECT outcome, next_tat, clock, used, free_taken, spent FROM meter_admit("
    ":institution_id, :contract_id, :interval, :window, :day, :month, :units, :price,"
    " :quota, :quota_period, :free_units, :free_period, :cap)"
)
# what a call held but did not bill, or a call rolled back, goes back to the counters
_RELEASE = sa.text(
    "UPDATE meter_count SET units = units - :units, free_units = free_units - :free, charged_fen = charged_fen - :fen"
    " WHERE institution_id = :institution_id AND period IN (:day, :month)"
)
# the reservations a session's transaction holds: released if it rolls back, kept if it commits
_HELD = "datazone.metering.held"


class MeterBusy(DomainError):
    status = 503
    type = "meter-busy"
    title = "The meter is busy"


@dataclass
class Reservation:
    """What an admission counted on the institution's day and month counters and still holds."""

    institution_id: int
    day: str
    month: str
    units: int
    free_units: int
    fen: int


def _release(session: Session, held: Reservation, *, units: int, free_units: int, fen: int) -> None:
    if units == 0 and free_units == 0 and fen == 0:
        return
    with autonomous(session) as conn:
        conn.execute(
            _RELEASE,
            {"institution_id": held.institution_id, "day": held.day, "month": held.month,
             "units": units, "free": free_units, "fen": fen},
        )
    held.units, held.free_units, held.fen = held.units - units, held.free_units - free_units, held.fen - fen


@sa.event.listens_for(Session, "after_commit")
def _reservations_kept(session: Session) -> None:
    session.info.pop(_HELD, None)


@sa.event.listens_for(Session, "after_rollback")
def _reservations_released(session: Session) -> None:
    for held in session.info.pop(_HELD, {}).values():
        try:
            _release(session, held, units=held.units, free_units=held.free_units, fen=held.fen)
        except sa.exc.SQLAlchemyError:
            # the rollback's own cause matters more; the counters err high (a refusal too early, never
            # an overshoot)
            log.exception("could not release %s units held by institution %s", held.units, held.institution_id)


@metrics.counts_meter_decisions
def admit(
    session: Session,
    *,
    institution_id: int,
    contract_id: int,
    plan_id: str,
    product_id: str,
    product_price_fen: int,
    units: int,
    at: datetime,
) -> Admission:
    """Admit a call for up to `units` billable units under the contract's plan, or refuse it.

    In order: the rate limit (GCRA per contract, in the database), the hard quota, the free
    units and price of each unit, the monthly spend cap; decided and counted by one statement in a
    transaction of its own (an institution's concurrent calls wait on each other for that statement
    only), so quotas and caps hold to the unit across replicas. The units are held for `session`'s
    transaction: what `record_usage` does not bill, or all of it if the transaction rolls back, goes
    back to the counters. Raises RateLimited, QuotaExceeded (429) or SpendCapReached (402), each with
    `retry_after` and a `headers` member for the HTTP answer; MeterBusy (503) if the counters stay
    locked past the lock time-out.
    """
    if units < 0:
        raise ValueError("units must be 0 or more")
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    plan = _plan(session, plan_id)
    interval = timedelta(seconds=1 / plan.rate_per_second)
    window = interval * plan.burst
    day, month = period_of(at, "day"), period_of(at, "month")
    price = plan.unit_price_fen if plan.unit_price_fen is not None else product_price_fen
    params = {
        "institution_id": institution_id,
        "contract_id": contract_id,
        "interval": interval,
        "window": window + timedelta(microseconds=1),
        "day": day,
        "month": month,
        "units": units,
        "price": price,
        "quota": plan.quota_units if plan.quota_period is not None else None,
        "quota_period": plan.quota_period,
        "free_units": plan.free_units,
        "free_period": plan.free_period,
        "cap": plan.monthly_cap_fen,
    }
    try:
        with autonomous(session) as conn:
            outcome, tat, now, used, free, spent = conn.execute(_ADMIT, params).one()
    except sa.exc.OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        raise MeterBusy(
            f"institution {institution_id}'s meter stayed locked past the time-out; retry in a moment",
            retry_after=1,
            headers={"Retry-After": "1"},
        ) from exc
    if outcome == "rate_limit":
        wait = max(tat, now) + interval - now - window
        retry_after = math.ceil(wait.total_seconds() * 1000) / 1000
        headers = _rate_headers(plan, limit_window=window, remaining=0, reset=tat - now, at=at)
        headers["Retry-After"] = str(max(1, _seconds_up(wait)))
        raise RateLimited(
            f"contract {contract_id} of institution {institution_id} may make {plan.burst} calls at once "
            f"and {plan.rate_per_second:g} a second after that (plan {plan.id}); retry after {retry_after:g} s",
            retry_after=retry_after,
            plan_id=plan.id,
            contract_id=contract_id,
            headers=headers,
        )
    # rate-limit headers as if this call is taken: a quota or cap refusal quotes the same
    remaining = int((window - (tat - now)) / interval + 1e-9)
    headers = _rate_headers(plan, limit_window=window, remaining=remaining, reset=tat - now, at=at)

    if outcome == "quota":
        assert plan.quota_units is not None and plan.quota_period is not None
        left = max(0, plan.quota_units - used)
        renews = period_end(at, plan.quota_period)
        retry_after = max(1, _seconds_up(renews - at))
        raise QuotaExceeded(
            f"institution {institution_id} has used {used} of the {plan.quota_units} units its plan "
            f"{plan.id} allows a {plan.quota_period}; this call needs {units} and {left} remain"
            f"; the quota renews at {renews.astimezone(SHANGHAI).isoformat()} (Asia/Shanghai)"
            + ("; send a smaller batch" if left else "")
            + " or ask the operator for a larger quota",
            plan_id=plan.id,
            quota_units=plan.quota_units,
            quota_period=plan.quota_period,
            used=used,
            requested=units,
            remaining=left,
            renews_at=renews.isoformat(),
            retry_after=retry_after,
            headers={**headers, "Retry-After": str(retry_after)},
        )

    charges = [0] * free + [price] * (units - free)
    charged = price * (units - free)
    if outcome == "cap":
        assert plan.monthly_cap_fen is not None
        renews = period_end(at, "month")
        retry_after = max(1, _seconds_up(renews - at))
        raise SpendCapReached(
            f"institution {institution_id} has spent {spent} of the {plan.monthly_cap_fen} fen its plan "
            f"{plan.id} allows in {month}; this call would cost {charged} fen "
            f"({units - free} units at {price} fen); the cap renews at "
            f"{renews.astimezone(SHANGHAI).isoformat()} (Asia/Shanghai), or ask the operator to raise it",
            plan_id=plan.id,
            monthly_cap_fen=plan.monthly_cap_fen,
            spent_fen=spent,
            call_fen=charged,
            period=month,
            retry_after=retry_after,
            headers={**headers, "Retry-After": str(retry_after)},
        )
    if outcome != "admitted":
        raise RuntimeError(f"meter_admit answered {outcome!r}")

    admission = Admission(
        institution_id=institution_id,
        contract_id=contract_id,
        plan_id=plan.id,
        product_id=product_id,
        units=units,
        unit_price_fen=price,
        charges_fen=charges,
        free_units=free,
        headers=headers,
        at=at,
        day=day,
        month=month,
    )
    session.info.setdefault(_HELD, {})[admission.reservation_id] = Reservation(
        institution_id, day, month, units, free, charged
    )
    return admission


@dataclass(frozen=True)
class Charge:
    """What billing `units` of an admitted call costs: the free units first, then the price."""

    units: int
    free_units: int
    fen: int


def charge_of(admission: Admission, *, units: int) -> Charge:
    if units > admission.units:
        raise ValueError(f"{units} units billed but only {admission.units} admitted")
    return Charge(units=units, free_units=min(units, admission.free_units), fen=sum(admission.charges_fen[:units]))


@dataclass(frozen=True, slots=True)
class BilledUnit:
    """One usage event as written: `quantity` units of a call at one price."""

    id: uuid.UUID
    call_id: uuid.UUID
    uscc: str | None
    price_fen: int
    free: bool
    quantity: int


# A call's usage events in one statement however many there are (a batch bills up to 1,000): the
# per-event values travel as arrays, with no ORM object or parameter set per event.
_INSERT_EVENTS = sa.text(
    "INSERT INTO usage_event (id, call_id, at, institution_id, client_id, contract_id, plan_id, product_id,"
    " purpose, uscc, price_fen, free, quantity, idempotency_key, debit_id)"
    " SELECT e.id, :call_id, :at, :institution_id, :client_id, :contract_id, :plan_id, :product_id, :purpose,"
    " e.uscc, e.price_fen, e.free, e.quantity, :idempotency_key, :debit_id"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:usccs AS text[]), CAST(:prices AS bigint[]),"
    " CAST(:frees AS boolean[]), CAST(:quantities AS bigint[])) AS e(id, uscc, price_fen, free, quantity)"
)


@dataclass(frozen=True)
class BilledCall:
    """What one admitted call bills, as the call pipeline hands it to the ledger (its debit) and to
    `record_usage` (its usage events, meter counts and kept answer): one object, not a dozen keywords.

    `usccs_billed` names the enterprises billed, or holds None for each unit that names none (a PSI
    set, anonymous queries). `body`, `status` and `headers` are the answer kept under the
    idempotency key for a retry. A job names its own `call_id`, so its charge can be found again."""

    admission: Admission
    institution_id: int
    client_id: str
    product_id: str
    purpose: str
    usccs_billed: Sequence[str | None]
    idempotency_key: str | None
    fingerprint: str | None
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    at: datetime
    call_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def charge(self) -> Charge:
        return charge_of(self.admission, units=len(self.usccs_billed))


def record_usage(session: Session, *, call: BilledCall, debit_id: int | None) -> list[BilledUnit]:
    """Record the billed call: one usage event per billed enterprise (or, for units naming no
    enterprise, one event of N units per price), the admitted units not billed given back to the
    meter, and the answer kept under the idempotency key. The ledger debit (`debit_id`) is posted by the call pipeline
    (`access.gates.bill`), which owns the order of metering and billing.

    `usccs_billed` may be fewer than the admitted units (enterprises not found are not billed):
    only what is billed reaches the meter. Returns what was written, one BilledUnit per usage event.
    """
    admission, usccs_billed, at = call.admission, call.usccs_billed, call.at
    if call.institution_id != admission.institution_id or call.product_id != admission.product_id:
        raise ValueError("record_usage must bill the institution and product that were admitted")
    n = len(usccs_billed)
    charge = charge_of(admission, units=n)
    charges = admission.charges_fen[:n]
    free, charged = charge.free_units, charge.fen
    if (debit_id is None) != (charged == 0):
        raise ValueError(f"a call charging {charged} fen needs a ledger debit exactly when it charges anything")
    common: dict[str, Any] = {
        "call_id": call.call_id,
        "at": at,
        "institution_id": call.institution_id,
        "client_id": call.client_id,
        "contract_id": admission.contract_id,
        "plan_id": admission.plan_id,
        "product_id": call.product_id,
        "purpose": str(call.purpose),
        "idempotency_key": call.idempotency_key,
        "debit_id": debit_id,
    }
    units: list[BilledUnit]
    if n and all(u is None for u in usccs_billed):
        # units that name no enterprise (a PSI set of up to millions of items, anonymous queries):
        # one event for the free units and one for the paid, each carrying its quantity
        paid = n - free
        units = [
            BilledUnit(uuid.uuid4(), call.call_id, None, price, is_free, q)
            for q, price, is_free in ((free, 0, True), (paid, admission.unit_price_fen, False))
            if q > 0
        ]
    else:
        units = [
            BilledUnit(uuid.uuid4(), call.call_id, uscc, charges[i], i < free, 1)
            for i, uscc in enumerate(usccs_billed)
        ]
    if units:
        session.execute(
            _INSERT_EVENTS,
            {
                **common,
                "ids": [u.id for u in units],
                "usccs": [u.uscc for u in units],
                "prices": [u.price_fen for u in units],
                "frees": [u.free for u in units],
                "quantities": [u.quantity for u in units],
            },
        )
    # the admission counted every admitted unit: what is not billed goes back to the counters now
    held = session.info.get(_HELD, {}).get(admission.reservation_id)
    if held is not None:
        _release(
            session, held, units=held.units - n, free_units=held.free_units - free, fen=held.fen - charged
        )
    if call.idempotency_key is not None:
        store_answer(
            session,
            institution_id=call.institution_id,
            key=call.idempotency_key,
            fingerprint=call.fingerprint or "",
            status=call.status,
            body=call.body,
            headers=call.headers,
        )
    return units


@dataclass(frozen=True)
class CallCharges:
    """What one call charged: its ledger debit (None when it was free) and the fen of the chosen units."""

    debit_id: int | None
    charged_fen: int


def call_charges(
    session: Session, *, institution_id: int, at: datetime, call_id: uuid.UUID, usccs: Sequence[str] | None = None
) -> CallCharges:
    """The debit of a call and what its usage events charged, all of them or those of `usccs`
    (`at` is the call's time: with the institution it finds the call's events by index)."""
    where = [UsageEvent.institution_id == institution_id, UsageEvent.at == at, UsageEvent.call_id == call_id]
    if usccs is not None:
        where.append(UsageEvent.uscc == sa.func.any(sa.cast(list(usccs), sa.ARRAY(sa.Text))))
    debit_id, charged = session.execute(
        sa.select(
            sa.func.max(UsageEvent.debit_id),
            sa.func.coalesce(sa.func.sum(UsageEvent.quantity * UsageEvent.price_fen), 0),
        ).where(
            *where
        )
    ).one()
    return CallCharges(debit_id, int(charged))


def refund_spend(session: Session, *, institution_id: int, period: str, amount_fen: int) -> None:
    """Give `amount_fen` back to the institution's monthly spend (a credit reversed a charge of `period`)."""
    if amount_fen <= 0:
        raise ValueError("amount_fen must be above 0")
    session.execute(
        sa.update(MeterCount)
        .where(MeterCount.institution_id == institution_id, MeterCount.period == period)
        .values(charged_fen=MeterCount.charged_fen - amount_fen)
    )


@dataclass(frozen=True)
class MeterReading:
    period: str
    units: int
    free_units: int
    charged_fen: int


def meter_reading(session: Session, *, institution_id: int, period: str) -> MeterReading:
    """The institution's counters for a Shanghai day 'YYYY-MM-DD' or month 'YYYY-MM'."""
    row = session.execute(
        sa.select(MeterCount.units, MeterCount.free_units, MeterCount.charged_fen).where(
            MeterCount.institution_id == institution_id, MeterCount.period == period
        )
    ).first()
    units, free, fen = row if row is not None else (0, 0, 0)
    return MeterReading(period=period, units=units, free_units=free, charged_fen=fen)


@dataclass(frozen=True)
class Allowance:
    """What an institution has left under one plan's terms in the current periods, read from the
    same counters and by the same rules as `meter_admit`: the quota counts the institution's
    admitted units of the quota's day or month (across all its contracts), the free units its free
    units of the free period, the spend cap its charged fen of the month. None: no such limit."""

    plan_id: str
    quota_units: int | None
    quota_period: str | None
    # the Shanghai day or month the quota counts ('YYYY-MM-DD' or 'YYYY-MM'), None without a quota
    quota_counted: str | None
    quota_used: int
    quota_remaining: int | None
    quota_renews_at: datetime | None
    free_units: int
    free_period: str
    free_used: int
    free_remaining: int
    monthly_cap_fen: int | None
    month: str
    spent_fen: int
    cap_remaining_fen: int | None


def plan_allowances(
    session: Session, *, institution_id: int, plan_ids: Sequence[str], at: datetime | None = None
) -> dict[str, Allowance]:
    """Each of `plan_ids`' allowances left to `institution_id` at `at` (default now), by plan id;
    an unknown plan id is left out. One query: the plans joined to the day's and month's counters.
    The caller decides who may read it (contracts: `contract.service.remaining_quota`)."""
    at = at or _now()
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    today, month = period_of(at, "day"), period_of(at, "month")
    day_count = aliased(MeterCount)
    month_count = aliased(MeterCount)
    rows = session.execute(
        sa.select(
            Plan.id,
            Plan.quota_units,
            Plan.quota_period,
            Plan.free_units,
            Plan.free_period,
            Plan.monthly_cap_fen,
            sa.func.coalesce(day_count.units, 0),
            sa.func.coalesce(day_count.free_units, 0),
            sa.func.coalesce(month_count.units, 0),
            sa.func.coalesce(month_count.free_units, 0),
            sa.func.coalesce(month_count.charged_fen, 0),
        )
        .select_from(Plan)
        .outerjoin(day_count, sa.and_(day_count.institution_id == institution_id, day_count.period == today))
        .outerjoin(
            month_count, sa.and_(month_count.institution_id == institution_id, month_count.period == month)
        )
        .where(Plan.id.in_(list(plan_ids)))
    )
    out: dict[str, Allowance] = {}
    for plan_id, quota, quota_period, free, free_period, cap, d_units, d_free, m_units, m_free, m_fen in rows:
        quota_used = int(d_units if quota_period == "day" else m_units) if quota_period is not None else 0
        free_used = int(d_free if free_period == "day" else m_free)
        out[plan_id] = Allowance(
            plan_id=plan_id,
            quota_units=quota,
            quota_period=quota_period,
            quota_counted=period_of(at, quota_period) if quota_period is not None else None,
            quota_used=quota_used,
            quota_remaining=max(0, quota - quota_used) if quota is not None else None,
            quota_renews_at=period_end(at, quota_period) if quota_period is not None else None,
            free_units=free,
            free_period=free_period,
            free_used=free_used,
            free_remaining=max(0, free - free_used),
            monthly_cap_fen=cap,
            month=month,
            spent_fen=int(m_fen),
            cap_remaining_fen=max(0, cap - int(m_fen)) if cap is not None else None,
        )
    return out


# ---------------------------------------------------------------- usage reads


def readable_by(viewer: Principal, institution_id: int | None = None) -> sa.ColumnElement[bool]:
    """The usage events the viewer may read, as a WHERE clause (every usage read uses it): an
    institution its own (whatever `institution_id` says), the operator anyone's (or
    `institution_id`'s); a department none (403)."""
    if viewer.kind == "institution":
        return UsageEvent.institution_id == viewer.id
    if viewer.kind != "operator":
        raise Forbidden(
            "usage is the institutions' and the operator's to read; a department sees its data's uses "
            "in the audit trail"
        )
    return sa.true() if institution_id is None else UsageEvent.institution_id == institution_id


def usage_window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """[since, until) checked; defaults: the start of this Shanghai month, now."""
    errors: list[dict[str, Any]] = []
    for name, t in (("since", since), ("until", until)):
        if t is not None and t.tzinfo is None:
            errors.append({"location": name, "problem": "give a time zone, e.g. 2026-11-01T00:00:00+08:00"})
    if errors:
        raise InvalidSpec("; ".join(f"{e['location']}: {e['problem']}" for e in errors), errors=errors)
    now = _now()
    end = until or now
    start = since or month_bounds(month_of(end))[0]
    if end <= start:
        raise InvalidSpec(
            f"until ({end.isoformat()}) must be after since ({start.isoformat()})",
            errors=[{"location": "until", "problem": "must be after since"}],
        )
    return start, end


@dataclass(frozen=True)
class UsageDay:
    institution_id: int
    product_id: str
    day: date
    calls: int
    units: int
    free_units: int
    charged_fen: int


def usage_by_day(
    session: Session,
    *,
    viewer: Principal,
    since: datetime | None = None,
    until: datetime | None = None,
    institution_id: int | None = None,
) -> list[UsageDay]:
    """Usage per institution, product and Shanghai day in [since, until) (default: this month so far)."""
    scope = readable_by(viewer, institution_id)
    start, end = usage_window(since, until)
    day = sa.cast(sa.func.timezone("Asia/Shanghai", UsageEvent.at), sa.Date).label("day")
    q = (
        sa.select(
            UsageEvent.institution_id,
            UsageEvent.product_id,
            day,
            sa.func.count(sa.distinct(UsageEvent.call_id)),
            sa.func.sum(UsageEvent.quantity),
            sa.func.coalesce(sa.func.sum(UsageEvent.quantity).filter(UsageEvent.free), 0),
            sa.func.coalesce(sa.func.sum(UsageEvent.quantity * UsageEvent.price_fen), 0),
        )
        .where(UsageEvent.at >= start, UsageEvent.at < end)
        .group_by(UsageEvent.institution_id, UsageEvent.product_id, day)
        .order_by(day, UsageEvent.institution_id, UsageEvent.product_id)
    )
    q = q.where(scope)
    return [
        UsageDay(
            institution_id=r[0],
            product_id=r[1],
            day=r[2],
            calls=r[3],
            units=int(r[4]),
            free_units=int(r[5]),
            charged_fen=int(r[6]),
        )
        for r in session.execute(q)
    ]


@dataclass(frozen=True)
class ProductDay:
    """One product's billed calls, units and fen in one Shanghai day."""

    day: date
    product_id: str
    calls: int
    units: int
    free_units: int
    charged_fen: int


def usage_per_product_day(
    session: Session,
    *,
    viewer: Principal,
    days: int,
    last_day: date | None = None,
    institution_id: int | None = None,
) -> list[ProductDay]:
    """Billed calls, units and fen per Shanghai day and product over the `days` days ending with
    `last_day` (default today), oldest day first: the operator's dashboard (every institution, or
    `institution_id`'s) and an institution's portal (its own, whatever `institution_id` says).
    A day with no usage has no row. One GROUP BY in PostgreSQL."""
    scope = readable_by(viewer, institution_id)
    window = day_window(days=days, last_day=last_day)
    day = shanghai_date(UsageEvent.at).label("day")
    q = (
        sa.select(
            day,
            UsageEvent.product_id,
            sa.func.count(sa.distinct(UsageEvent.call_id)),
            sa.func.sum(UsageEvent.quantity),
            sa.func.coalesce(sa.func.sum(UsageEvent.quantity).filter(UsageEvent.free), 0),
            sa.func.coalesce(sa.func.sum(UsageEvent.quantity * UsageEvent.price_fen), 0),
        )
        .where(UsageEvent.at >= window.since, UsageEvent.at < window.until)
        .group_by(day, UsageEvent.product_id)
        .order_by(day, UsageEvent.product_id)
    )
    q = q.where(scope)
    return [
        ProductDay(day=d, product_id=p, calls=int(c), units=int(u), free_units=int(f), charged_fen=int(fen))
        for d, p, c, u, f, fen in session.execute(q)
    ]


@dataclass(frozen=True)
class ProductUnits:
    product_id: str
    units: int
    free_units: int
    charged_fen: int


def units_by_product(
    session: Session, *, institution_id: int, since: datetime, until: datetime
) -> list[ProductUnits]:
    """An institution's billed units per product in [since, until) (for statements)."""
    rows = session.execute(
        sa.select(
            UsageEvent.product_id,
            sa.func.sum(UsageEvent.quantity),
            sa.func.coalesce(sa.func.sum(UsageEvent.quantity).filter(UsageEvent.free), 0),
            sa.func.coalesce(sa.func.sum(UsageEvent.quantity * UsageEvent.price_fen), 0),
        )
        .where(UsageEvent.institution_id == institution_id, UsageEvent.at >= since, UsageEvent.at < until)
        .group_by(UsageEvent.product_id)
        .order_by(UsageEvent.product_id)
    )
    return [
        ProductUnits(product_id=r[0], units=int(r[1]), free_units=int(r[2]), charged_fen=int(r[3])) for r in rows
    ]


def list_usage_events(
    session: Session,
    *,
    viewer: Principal,
    since: datetime | None = None,
    after: uuid.UUID | None = None,
    limit: int = 1000,
    institution_id: int | None = None,
) -> list[UsageEvent]:
    """Usage events in time order from `since` (after event `after`, for the next page)."""
    scope = readable_by(viewer, institution_id)
    errors: list[dict[str, Any]] = []
    if not 1 <= limit <= MAX_EVENTS_PAGE:
        errors.append({"location": "limit", "problem": f"limit is 1..{MAX_EVENTS_PAGE}, not {limit}"})
    if since is not None and since.tzinfo is None:
        errors.append({"location": "since", "problem": "give a time zone, e.g. 2026-11-01T00:00:00+08:00"})
    if errors:
        raise InvalidSpec("; ".join(f"{e['location']}: {e['problem']}" for e in errors), errors=errors)
    q = sa.select(UsageEvent).order_by(UsageEvent.at, UsageEvent.id).limit(limit)
    q = q.where(scope)
    if after is not None:
        anchor = session.scalar(sa.select(UsageEvent).where(UsageEvent.id == after, scope))
        if anchor is None:
            raise NotFound(f"no usage event {after}; page on with the id of the last event you received")
        q = q.where(
            sa.tuple_(UsageEvent.at, UsageEvent.id) > sa.tuple_(sa.literal(anchor.at), sa.literal(anchor.id))
        )
    elif since is not None:
        q = q.where(UsageEvent.at >= since)
    return list(session.scalars(q))


def usage_cloudevent(event: UsageEvent) -> CloudEvent:
    """A usage event as a CloudEvents 1.0 event."""
    return CloudEvent(
        attributes={
            "id": str(event.id),
            "source": f"/datazone/products/{event.product_id}",
            "type": USAGE_EVENT_TYPE,
            "subject": str(event.institution_id),
            "time": event.at,
            "datacontenttype": "application/json",
        },
        data={
            "product": event.product_id,
            "purpose": event.purpose,
            "uscc": event.uscc,
            "quantity": event.quantity,
            "price_fen": event.price_fen,
            "amount_fen": event.quantity * event.price_fen,
            "free": event.free,
            "client_id": event.client_id,
        },
    )


def cloudevents_batch(events: Sequence[UsageEvent]) -> bytes:
    """A CloudEvents JSON batch (a JSON array of structured events), written by the SDK's JSON format."""
    fmt = JSONFormat()
    return b"[" + b",".join(fmt.write(usage_cloudevent(e)) for e in events) + b"]"
