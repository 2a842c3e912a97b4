"""The operator's ledger page: debits and credits per month and institution, and a curator's credit of a charge."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from datazone.billing import service as billing_service
from datazone.billing.schemas import CreditIn
from datazone.console.pages import (
    PREFIX,
    FormDep,
    NavItem,
    csrf_protect,
    done,
    field,
    person_with,
    register_nav,
    render,
)
from datazone.console.service import Person
from datazone.deps import SessionDep
from datazone.errors import DomainError, InvalidSpec
from datazone.principal import service as principal_service

HOME = f"{PREFIX}/operator"
router = APIRouter(prefix=HOME, include_in_schema=False, dependencies=[Depends(csrf_protect)])
# the ledger is read by those who price (curators) and those who audit; only a curator credits
Reader = Annotated[Person, Depends(person_with("operator", "curator", "auditor"))]
Curator = Annotated[Person, Depends(person_with("operator", "curator"))]
SHANGHAI = ZoneInfo("Asia/Shanghai")
SHOWN = 1000  # entries of one month on the page (the API's page size)

register_nav("operator", [NavItem(f"{HOME}/ledger", "op.nav.ledger", ("curator", "auditor"))], group=1)


def _this_month() -> str:
    return datetime.now(SHANGHAI).strftime("%Y-%m")


def _ledger_page(
    request: Request,
    session: Session,
    person: Person,
    *,
    period: str,
    institution_id: int | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    entries = billing_service.list_entries(
        session, viewer=person.principal, period=period, institution_id=institution_id, limit=SHOWN
    )
    institutions = principal_service.list_principals(session, kind="institution")
    credited = {e.reverses_id: 0 for e in entries if e.reverses_id is not None}
    for e in entries:
        if e.reverses_id is not None:
            credited[e.reverses_id] += e.amount_fen
    return render(
        request,
        "operator/ledger.html",
        person=person,
        status_code=status_code,
        entries=list(reversed(entries)),
        period=period,
        institution_id=institution_id,
        institutions=institutions,
        names={i.id: i.name for i in institutions},
        debit_fen=sum(e.amount_fen for e in entries if e.kind == "debit"),
        credit_fen=sum(e.amount_fen for e in entries if e.kind == "credit"),
        can_credit=person.has_role("curator"),
        **context,
    )


@router.get("/ledger", response_class=HTMLResponse)
def ledger(
    request: Request,
    session: SessionDep,
    person: Reader,
    period: Annotated[str, Query(max_length=7)] = "",
    institution: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    """A month's ledger (this month by default), newest first, for one institution or all."""
    return _ledger_page(request, session, person, period=period or _this_month(), institution_id=institution)


@router.post("/ledger/{entry_id}/credit", response_class=HTMLResponse)
def credit(request: Request, entry_id: int, session: SessionDep, person: Curator, form: FormDep) -> Response:
    """Credit a debit, wholly (no amount) or in part, as POST /v1/ledger/{id}/credits does."""
    amount = field(form, "amount_fen")
    period = field(form, "period") or _this_month()
    try:
        body = CreditIn.model_validate({"amount_fen": amount or None, "reason": field(form, "reason")})
        billing_service.credit_entry(
            session, debit_id=entry_id, amount_fen=body.amount_fen, reason=body.reason, by=person.principal
        )
    except ValidationError as exc:
        problems = [
            {"location": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
        ]
        refusal = InvalidSpec(
            "; ".join(f"{p['location']}: {p['problem']}" for p in problems), errors=problems
        )
        return _ledger_page(
            request, session, person, period=period, institution_id=None, status_code=422, refusal=refusal
        )
    except DomainError as exc:
        session.rollback()
        return _ledger_page(
            request, session, person, period=period, institution_id=None, status_code=exc.status, refusal=exc
        )
    return done(f"{HOME}/ledger", "notice.op.credited", period=period)
