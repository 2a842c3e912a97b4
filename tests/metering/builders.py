"""Institutions with contracts under plans of the test's choosing, and product calls billed the
way the gateway bills them: claim the idempotency key, admit, answer, record usage, in one
transaction."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from datazone.access import gates
from datazone.contract import service as contract_service
from datazone.db import Database
from datazone.errors import DomainError
from datazone.metering import service as metering
from datazone.metering.service import Admission, StoredAnswer
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from tests.factories import make_uscc
from tests.grant.builders import catalog

__all__ = [
    "Bank",
    "CallResult",
    "call",
    "catalog",
    "committed_bank",
    "committed_curator",
    "contract_under_plan",
    "totals",
    "uscc_list",
]


def committed_curator(db: Database) -> tuple[Principal, str]:
    with db.unit_of_work() as s:
        p = principal_service.create_principal(
            s, kind="operator", name=f"curator_{secrets.token_hex(4)}", roles=["curator"]
        )
        return p, principal_service.issue_key(s, principal=p).token


@dataclass
class Bank:
    institution: Principal
    token: str
    contract_id: int
    plan_id: str
    curator: Principal


def committed_bank(
    db: Database, *, products: tuple[str, ...] = ("risk-insight", "credit-basic"), **plan: Any
) -> Bank:
    """A committed institution with a contract under a private plan made of `plan`'s terms
    (rate 1000/s, burst 1000 unless given)."""
    curator, _ = committed_curator(db)
    tag = secrets.token_hex(4)
    with db.unit_of_work() as s:
        bank = principal_service.create_principal(s, kind="institution", name=f"bank_{tag}")
        token = principal_service.issue_key(s, principal=bank).token
        terms: dict[str, Any] = {"rate_per_second": 1000.0, "burst": 1000, **plan}
        p = metering.create_plan(
            s, plan_id=f"plan-{tag}", name=f"plan {tag}", institution_id=bank.id, by=curator, **terms
        )
        contract = contract_service.create_contract(
            s,
            institution_id=bank.id,
            purposes=["pre_loan", "post_loan"],
            products=list(products),
            valid_from=datetime.now(UTC) - timedelta(days=1),
            valid_to=datetime.now(UTC) + timedelta(days=365),
            plan_id=p.id,
            by=curator,
        )
        return Bank(institution=bank, token=token, contract_id=contract.id, plan_id=p.id, curator=curator)


def contract_under_plan(db: Database, bank: Bank, *, products: tuple[str, ...], **plan: Any) -> Bank:
    """The same institution with a further contract for `products` under a private plan of its own."""
    tag = secrets.token_hex(4)
    with db.unit_of_work() as s:
        p = metering.create_plan(
            s, plan_id=f"plan-{tag}", name=f"plan {tag}", institution_id=bank.institution.id,
            by=bank.curator, **plan,
        )
        contract = contract_service.create_contract(
            s,
            institution_id=bank.institution.id,
            purposes=["pre_loan", "post_loan"],
            products=list(products),
            valid_from=datetime.now(UTC) - timedelta(days=1),
            valid_to=datetime.now(UTC) + timedelta(days=365),
            plan_id=p.id,
            by=bank.curator,
        )
        return replace(bank, contract_id=contract.id, plan_id=p.id)


def uscc_list(n: int, start: int = 0) -> list[str]:
    return [make_uscc(start + i) for i in range(n)]


@dataclass
class CallResult:
    admission: Admission | None = None
    replayed: StoredAnswer | None = None
    error: DomainError | None = None
    events: list[Any] = field(default_factory=list)


def call(
    db: Database,
    bank: Bank,
    *,
    units: int = 1,
    found: int | None = None,
    price_fen: int = 500,
    product_id: str = "risk-insight",
    key: str | None = None,
    body: bytes = b"",
    at: datetime | None = None,
    client_id: str = "app-1",
) -> CallResult:
    """One product call billed as the gateway bills it; a refusal rolls the transaction back."""
    at = at or datetime.now(UTC)
    usccs = uscc_list(units, start=secrets.randbelow(10**6))
    billed = usccs[: units if found is None else found]
    fp = metering.fingerprint("POST", f"/v1/products/{product_id}/enterprises", "", body)
    result = CallResult()
    try:
        with db.unit_of_work() as s:
            if key is not None:
                stored = metering.begin_idempotent(
                    s, institution_id=bank.institution.id, key=key, fingerprint=fp
                )
                if stored is not None:
                    return CallResult(replayed=stored)
            admission = metering.admit(
                s,
                institution_id=bank.institution.id,
                contract_id=bank.contract_id,
                plan_id=bank.plan_id,
                product_id=product_id,
                product_price_fen=price_fen,
                units=units,
                at=at,
            )
            answer = {"answers": billed, "call": secrets.token_hex(8)}
            result.admission = admission
            result.events = gates.bill(
                s,
                metering.BilledCall(
                    admission=admission,
                    institution_id=bank.institution.id,
                    client_id=client_id,
                    product_id=product_id,
                    purpose="pre_loan",
                    usccs_billed=billed,
                    idempotency_key=key,
                    fingerprint=fp if key is not None else None,
                    status=200,
                    body=answer,
                    headers=admission.headers,
                    at=at,
                ),
            )
    except DomainError as e:
        result.error = e
    return result


def totals(db: Database, institution_id: int) -> tuple[int, int, int]:
    """(usage events, ledger debits in fen, ledger credits in fen) of an institution."""
    with db.unit_of_work() as s:
        events = s.execute(
            sa.text("SELECT count(*) FROM usage_event WHERE institution_id = :i"), {"i": institution_id}
        ).scalar_one()
        debits, credits = s.execute(
            sa.text(
                "SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'debit'), 0),"
                " coalesce(sum(amount_fen) FILTER (WHERE kind = 'credit'), 0)"
                " FROM ledger_entry WHERE institution_id = :i"
            ),
            {"i": institution_id},
        ).one()
        return int(events), int(debits), int(credits)
