"""Billing: the ledger of debits (what calls charged) and credits (reversals of debits), and the
monthly statements drawn from it.

A debit is posted by the call pipeline (`access.gates.bill`) in the call's own transaction; entries are never
changed or deleted, so a statement's totals are the sums of its month's entries, and a credit
reverses (part of) a debit without touching it.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.billing.models import LedgerEntry
from datazone.db import shanghai_date
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from datazone.limits import EARLIEST, LATEST, day_window, excerpt
from datazone.metering import service as metering_service
from datazone.principal import service as principal_service
from datazone.principal.models import Principal

PERIOD_PATTERN = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


class CreditExceedsDebit(Conflict):
    type = "credit-exceeds-debit"
    title = "The credit is more than remains of the debit"


def _now() -> datetime:
    return datetime.now(UTC)


def yuan(fen: int) -> str:
    """Integer fen as yuan text, e.g. 123456 -> '1,234.56' (for people; amounts stay integer fen)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def post_debit(
    session: Session,
    *,
    institution_id: int,
    amount_fen: int,
    period: str,
    product_id: str,
    usage_count: int,
    memo: str,
    at: datetime,
) -> LedgerEntry:
    """Charge one call: one debit for the call's charged total (metering calls this)."""
    if amount_fen <= 0:
        raise ValueError("a debit is above 0 fen; post none for a free call")
    entry = LedgerEntry(
        institution_id=institution_id,
        kind="debit",
        amount_fen=amount_fen,
        period=period,
        product_id=product_id,
        usage_count=usage_count,
        memo=memo,
        at=at,
    )
    session.add(entry)
    session.flush()
    return entry


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The ledger entries the viewer may read, as a WHERE clause: an institution its own, the
    operator all (every list and get of the ledger uses it)."""
    if viewer.kind == "institution":
        return LedgerEntry.institution_id == viewer.id
    if viewer.kind == "operator":
        return sa.true()
    raise Forbidden("the ledger is the institutions' and the operator's to read; a department sees none")


def get_entry(session: Session, *, entry_id: int, viewer: Principal, for_update: bool = False) -> LedgerEntry:
    """A ledger entry the viewer may see (an institution's own only: 404 for another's)."""
    q = sa.select(LedgerEntry).where(LedgerEntry.id == entry_id, readable_by(viewer))
    if for_update:
        q = q.with_for_update().execution_options(populate_existing=True)
    entry = session.scalar(q)
    if entry is None:
        raise NotFound(f"no ledger entry {entry_id}")
    return entry


def credited_fen(session: Session, *, debit_id: int) -> int:
    """How much of a debit credits have reversed so far."""
    return int(
        session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(LedgerEntry.amount_fen), 0)).where(
                LedgerEntry.reverses_id == debit_id
            )
        )
        or 0
    )


def credit_entry(
    session: Session, *, debit_id: int, amount_fen: int | None = None, reason: str, by: Principal
) -> LedgerEntry:
    """Reverse a debit, wholly (amount_fen None: all that remains of it) or in part.

    The credit belongs to the debit's month: it nets that month's statement and gives the amount
    back to that month's spend cap. Never more than remains of the debit (409)."""
    principal_service.require_role(by, "curator", "credit charges")
    errors: list[dict[str, Any]] = []
    if not reason or not reason.strip():
        errors.append({"location": "reason", "problem": "say why the charge is credited"})
    if amount_fen is not None and amount_fen <= 0:
        errors.append(
            {
                "location": "amount_fen",
                "problem": f"a credit is above 0 fen, not {amount_fen}; omit it to credit all",
            }
        )
    if errors:
        raise InvalidSpec(
            "the credit is not valid, nothing was written: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in errors),
            errors=errors,
        )
    # the lock orders concurrent credits of one debit, so they never reverse more than it charged
    debit = get_entry(session, entry_id=debit_id, viewer=by, for_update=True)
    if debit.kind != "debit":
        raise Conflict(
            f"ledger entry {debit_id} is a credit; credit the debit it reverses ({debit.reverses_id})",
            entry_id=debit_id,
        )
    remaining = debit.amount_fen - credited_fen(session, debit_id=debit_id)
    amount = remaining if amount_fen is None else amount_fen
    if remaining == 0 or amount > remaining:
        raise CreditExceedsDebit(
            f"debit {debit_id} charged {debit.amount_fen} fen and {remaining} fen of it remain to credit; "
            + (
                "it is wholly credited already"
                if remaining == 0
                else f"a credit of {amount} fen is more than that"
            ),
            debit_id=debit_id,
            debit_fen=debit.amount_fen,
            remaining_fen=remaining,
        )
    return _post_credit(session, debit=debit, amount_fen=amount, reason=reason.strip(), by=by)


def credit_undelivered(
    session: Session, *, debit_id: int, amount_fen: int | None = None, reason: str, actor_name: str
) -> LedgerEntry | None:
    """The zone's own credit of a charge for something it did not deliver (a job that failed on
    its side): what remains of the debit, or `amount_fen` of it, whichever is less; None when
    nothing remains, so running it again (a worker restarted mid-way) credits nothing twice."""
    debit = session.scalar(
        sa.select(LedgerEntry)
        .where(LedgerEntry.id == debit_id, LedgerEntry.kind == "debit")
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if debit is None:
        raise NotFound(f"no ledger debit {debit_id}")
    remaining = debit.amount_fen - credited_fen(session, debit_id=debit_id)
    amount = remaining if amount_fen is None else min(amount_fen, remaining)
    if amount <= 0:
        return None
    return _post_credit(session, debit=debit, amount_fen=amount, reason=reason, by=None, actor_name=actor_name)


def _post_credit(
    session: Session,
    *,
    debit: LedgerEntry,
    amount_fen: int,
    reason: str,
    by: Principal | None,
    actor_name: str | None = None,
) -> LedgerEntry:
    """Write a credit against a locked debit, give it back to the month's spend, and audit it."""
    credit = LedgerEntry(
        institution_id=debit.institution_id,
        kind="credit",
        amount_fen=amount_fen,
        period=debit.period,
        product_id=debit.product_id,
        usage_count=0,
        memo=reason,
        reverses_id=debit.id,
        created_by=by.id if by is not None else None,
        at=_now(),
    )
    session.add(credit)
    session.flush()
    metering_service.refund_spend(
        session, institution_id=debit.institution_id, period=debit.period, amount_fen=amount_fen
    )
    audit_service.record(
        session,
        actor=by,
        actor_name=actor_name if by is None else None,
        action="ledger.credit",
        object_type="ledger_entry",
        object_id=str(credit.id),
        reason=reason,
        institution_id=debit.institution_id,
        detail={
            "debit_id": debit.id,
            "amount_fen": amount_fen,
            "debit_fen": debit.amount_fen,
            "period": debit.period,
            "product_id": debit.product_id,
        },
    )
    return credit


def list_entries(
    session: Session,
    *,
    viewer: Principal,
    period: str | None = None,
    institution_id: int | None = None,
    limit: int = 1000,
) -> list[LedgerEntry]:
    if period is not None:
        check_period(period)
    q = sa.select(LedgerEntry).where(readable_by(viewer)).order_by(LedgerEntry.id).limit(limit)
    if period is not None:
        q = q.where(LedgerEntry.period == period)
    if viewer.kind == "operator" and institution_id is not None:
        q = q.where(LedgerEntry.institution_id == institution_id)
    return list(session.scalars(q))


@dataclass(frozen=True)
class RevenueDay:
    """The ledger of one Shanghai day: debits posted (what calls charged) and credits (reversals)."""

    day: date
    debits: int
    debit_fen: int
    credit_fen: int

    @property
    def net_fen(self) -> int:
        return self.debit_fen - self.credit_fen


def revenue_per_day(
    session: Session,
    *,
    viewer: Principal,
    days: int,
    last_day: date | None = None,
    institution_id: int | None = None,
) -> list[RevenueDay]:
    """Debits and credits per Shanghai day of their posting over the `days` days ending with
    `last_day` (default today), oldest first; a day with no entry has no row. The operator sees every
    institution's (or `institution_id`'s), an institution its own. A credit counts on the day it was
    posted, not its debit's (a statement counts it in its debit's month). One GROUP BY."""
    window = day_window(days=days, last_day=last_day)
    day = shanghai_date(LedgerEntry.at).label("day")
    q = (
        sa.select(
            day,
            sa.func.count().filter(LedgerEntry.kind == "debit"),
            sa.func.coalesce(sa.func.sum(LedgerEntry.amount_fen).filter(LedgerEntry.kind == "debit"), 0),
            sa.func.coalesce(sa.func.sum(LedgerEntry.amount_fen).filter(LedgerEntry.kind == "credit"), 0),
        )
        .where(readable_by(viewer), LedgerEntry.at >= window.since, LedgerEntry.at < window.until)
        .group_by(day)
        .order_by(day)
    )
    if viewer.kind == "operator" and institution_id is not None:
        q = q.where(LedgerEntry.institution_id == institution_id)
    return [
        RevenueDay(day=d, debits=int(n), debit_fen=int(debit), credit_fen=int(credit))
        for d, n, debit, credit in session.execute(q)
    ]


def check_period(period: str) -> str:
    found = PERIOD_PATTERN.fullmatch(period)
    if not found:
        raise InvalidSpec(
            f"{excerpt(period)!r} is not a month; write YYYY-MM, e.g. 2026-11 (Asia/Shanghai calendar)",
            errors=[{"location": "period", "problem": "write YYYY-MM"}],
        )
    if not EARLIEST.year <= int(found[1]) < LATEST.year:
        raise InvalidSpec(
            f"{period} is outside the zone's time: a period lies from {EARLIEST.year}-01 to {LATEST.year - 1}-12",
            errors=[{"location": "period", "problem": f"the year must lie from {EARLIEST.year} to {LATEST.year - 1}"}],
        )
    return period


@dataclass
class StatementLine:
    product_id: str
    units: int = 0
    free_units: int = 0
    debit_fen: int = 0
    credit_fen: int = 0

    @property
    def net_fen(self) -> int:
        return self.debit_fen - self.credit_fen


@dataclass
class Statement:
    institution_id: int
    period: str
    lines: list[StatementLine]
    entry_ids: list[int]
    created_at: datetime
    entries: list[LedgerEntry] = field(default_factory=list)

    @property
    def units(self) -> int:
        return sum(line.units for line in self.lines)

    @property
    def free_units(self) -> int:
        return sum(line.free_units for line in self.lines)

    @property
    def debit_fen(self) -> int:
        return sum(line.debit_fen for line in self.lines)

    @property
    def credit_fen(self) -> int:
        return sum(line.credit_fen for line in self.lines)

    @property
    def net_fen(self) -> int:
        return self.debit_fen - self.credit_fen


def statement(
    session: Session, *, period: str, viewer: Principal, institution_id: int | None = None
) -> Statement:
    """An institution's statement of a Shanghai month: per product the units used (free ones apart)
    and the debits, credits and net of the month's ledger entries."""
    check_period(period)
    if viewer.kind == "institution":
        whose = viewer.id
    elif viewer.kind == "operator":
        if institution_id is None:
            raise InvalidSpec(
                "name the institution whose statement to show: ?institution_id=",
                errors=[{"location": "institution_id", "problem": "required for the operator"}],
            )
        whose = institution_id
    else:
        raise Forbidden("statements are the institutions' and the operator's to read; a department sees none")
    entries = list(
        session.scalars(
            sa.select(LedgerEntry)
            .where(LedgerEntry.institution_id == whose, LedgerEntry.period == period)
            .order_by(LedgerEntry.id)
        )
    )
    lines: dict[str, StatementLine] = {}

    def line(product_id: str | None) -> StatementLine:
        key = product_id or ""
        return lines.setdefault(key, StatementLine(product_id=key))

    since, until = metering_service.month_bounds(period)
    for used in metering_service.units_by_product(session, institution_id=whose, since=since, until=until):
        target = line(used.product_id)
        target.units = used.units
        target.free_units = used.free_units
    for entry in entries:
        target = line(entry.product_id)
        if entry.kind == "debit":
            target.debit_fen += entry.amount_fen
        else:
            target.credit_fen += entry.amount_fen
    return Statement(
        institution_id=whose,
        period=period,
        lines=[lines[k] for k in sorted(lines)],
        entry_ids=[e.id for e in entries],
        created_at=_now(),
        entries=entries,
    )


CSV_COLUMNS = (
    "period",
    "institution_id",
    "product_id",
    "units",
    "free_units",
    "debit_fen",
    "credit_fen",
    "net_fen",
    "net_yuan",
)


def statement_csv(st: Statement) -> str:
    """The statement as CSV: one row per product, then a TOTAL row; amounts in integer fen, with the
    net also as yuan text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for ln in st.lines:
        writer.writerow(
            (
                st.period,
                st.institution_id,
                ln.product_id,
                ln.units,
                ln.free_units,
                ln.debit_fen,
                ln.credit_fen,
                ln.net_fen,
                yuan(ln.net_fen),
            )
        )
    writer.writerow(
        (
            st.period,
            st.institution_id,
            "TOTAL",
            st.units,
            st.free_units,
            st.debit_fen,
            st.credit_fen,
            st.net_fen,
            yuan(st.net_fen),
        )
    )
    return out.getvalue()
