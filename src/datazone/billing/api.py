from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from datazone.billing import service
from datazone.billing.schemas import CreditIn, LedgerEntryOut, StatementLineOut, StatementOut
from datazone.deps import CuratorDep, PrincipalDep, SessionDep
from datazone.errors import InvalidSpec
from datazone.limits import DbId, QueryDbId, QueryText, page_limit
from datazone.openapi import content_responses

router = APIRouter(prefix="/v1", tags=["billing"])


def _statement_out(st: service.Statement) -> StatementOut:
    return StatementOut(
        institution_id=st.institution_id,
        period=st.period,
        lines=[
            StatementLineOut(
                product_id=ln.product_id,
                units=ln.units,
                free_units=ln.free_units,
                debit_fen=ln.debit_fen,
                credit_fen=ln.credit_fen,
                net_fen=ln.net_fen,
                net_yuan=service.yuan(ln.net_fen),
            )
            for ln in st.lines
        ],
        units=st.units,
        free_units=st.free_units,
        debit_fen=st.debit_fen,
        credit_fen=st.credit_fen,
        net_fen=st.net_fen,
        net_yuan=service.yuan(st.net_fen),
        entry_ids=st.entry_ids,
        created_at=st.created_at,
    )


@router.get("/statements/{period}", response_model=StatementOut, responses=content_responses("text/csv"))
def get_statement(
    period: str,
    session: SessionDep,
    principal: PrincipalDep,
    institution_id: QueryDbId = None,
    format: str = "json",
) -> StatementOut | Response:
    """A month's statement (YYYY-MM, Shanghai): JSON, or CSV with `.csv` or `?format=csv`."""
    if period.endswith(".csv"):
        period, format = period.removesuffix(".csv"), "csv"
    if format not in ("json", "csv"):
        raise InvalidSpec(
            f"format is json or csv, not {format!r}",
            errors=[{"location": "format", "problem": "json or csv"}],
        )
    st = service.statement(session, period=period, viewer=principal, institution_id=institution_id)
    if format == "csv":
        return Response(
            service.statement_csv(st),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="statement-{st.institution_id}-{st.period}.csv"'
            },
        )
    return _statement_out(st)


@router.get("/ledger")
def list_ledger(
    session: SessionDep,
    principal: PrincipalDep,
    period: QueryText = None,
    institution_id: QueryDbId = None,
    limit: Annotated[int, page_limit()] = 1000,
) -> list[LedgerEntryOut]:
    """Ledger entries (debits and credits), newest first, optionally for one month."""
    entries = service.list_entries(
        session,
        viewer=principal,
        period=period,
        institution_id=institution_id,
        limit=limit,
    )
    return [LedgerEntryOut.model_validate(e) for e in entries]


@router.get("/ledger/{entry_id}")
def get_ledger_entry(entry_id: DbId, session: SessionDep, principal: PrincipalDep) -> LedgerEntryOut:
    """One ledger entry with what it bills or credits."""
    return LedgerEntryOut.model_validate(service.get_entry(session, entry_id=entry_id, viewer=principal))


@router.post("/ledger/{entry_id}/credits", status_code=201)
def credit_debit(entry_id: DbId, body: CreditIn, session: SessionDep, curator: CuratorDep) -> LedgerEntryOut:
    """Reverse a debit, wholly (no amount) or in part."""
    credit = service.credit_entry(
        session, debit_id=entry_id, amount_fen=body.amount_fen, reason=body.reason, by=curator
    )
    return LedgerEntryOut.model_validate(credit)
