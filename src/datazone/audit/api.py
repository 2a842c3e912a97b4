"""`/v1/audit`: published roots, scoped entries and uses, inclusion proofs, chain verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from datazone.audit import service
from datazone.audit.schemas import (
    ChainReportOut,
    EntryOut,
    InclusionProofOut,
    UseOut,
)
from datazone.deps import AuditorDep, PrincipalDep, SessionDep
from datazone.limits import DbId, Height, QueryDbId, QueryText, SinceQuery, UntilQuery, page_limit
from datazone.openapi import problem_responses

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/blocks")
def list_blocks(
    session: SessionDep,
    principal: PrincipalDep,
    from_height: Height = 0,
    limit: Annotated[int, page_limit()] = 10_000,
) -> list[dict[str, Any]]:
    """The published roots, lowest height first; save them to check the chain later."""
    return service.list_blocks(session, from_height=from_height, limit=limit)


@router.get("/entries", response_model=list[EntryOut])
def list_entries(
    session: SessionDep,
    principal: PrincipalDep,
    action: QueryText = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    before_id: QueryDbId = None,
) -> list[EntryOut]:
    """Newest first; for the next (older) page pass the last id received as before_id."""
    entries = service.list_entries(
        session, viewer=principal, action=action, since=since, until=until, limit=limit, before_id=before_id
    )
    return [EntryOut.model_validate(e) for e in entries]


@router.get(
    "/entries/{entry_id}/proof", response_model=InclusionProofOut, responses=problem_responses(409)
)
def entry_proof(session: SessionDep, principal: PrincipalDep, entry_id: DbId) -> dict[str, Any]:
    """An audit entry's inclusion proof: its leaf, the Merkle path and the block root it is sealed under (409
    until sealed)."""
    return service.inclusion_proof(session, entry_id=entry_id, viewer=principal)


@router.get("/uses", response_model=list[UseOut])
def list_uses(
    session: SessionDep,
    principal: PrincipalDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    product_id: QueryText = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = service.MAX_PAGE,
    before_id: QueryDbId = None,
) -> list[UseOut]:
    """Uses of data in [since, until) (default: the last 30 days), newest first; for the next
    page pass the last entry_id received as before_id."""
    until = until or datetime.now(UTC)
    since = since or (until - timedelta(days=30) if until.tzinfo else until)
    uses = service.list_uses(
        session,
        viewer=principal,
        since=since,
        until=until,
        product_id=product_id,
        limit=limit,
        before_id=before_id,
    )
    return [UseOut(**u.__dict__) for u in uses]


@router.get("/verify", response_model=ChainReportOut)
def verify(session: SessionDep, auditor: AuditorDep) -> ChainReportOut:
    """Verify the whole audit chain: every block's Merkle root and link to the previous block (an auditor)."""
    report = service.verify_chain(session)
    return ChainReportOut(**report.__dict__)


@router.post("/verify", response_model=ChainReportOut)
def verify_against_roots(
    session: SessionDep, auditor: AuditorDep, roots: Annotated[list[dict[str, Any]], Body()]
) -> ChainReportOut:
    """The same check, and each block must also be the one published earlier (roots as GET /blocks gave them)."""
    report = service.verify_chain(session, roots=roots)
    return ChainReportOut(**report.__dict__)
