"""Anonymous-query routes for institutions: the live table's parameters, and queries.

Like product answers, a request's answer, usage events and audit entry commit before the
response is sent, and a refusal is audited in a transaction of its own.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from datazone.access import service as access_service
from datazone.access.api import GrantDep, IdempotencyKey, raw_body
from datazone.anonymous import service
from datazone.anonymous.schemas import ParametersOut, QueriesIn, QueriesOut
from datazone.config import Settings
from datazone.deps import DbDep, SessionDep
from datazone.errors import DomainError
from datazone.metering import service as metering

router = APIRouter(prefix="/v1/anonymous", tags=["anonymous query"])

ProductId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{1,62}$")]


@router.get("/{product_id}", response_model=ParametersOut)
def table_parameters(product_id: ProductId, session: SessionDep, grant: GrantDep) -> dict[str, Any]:
    """k, the prefix length and the table to ask against; 503 while the zone seals the buckets."""
    return service.parameters(session, grant=grant, product_id=product_id)


@router.post("/{product_id}/queries", response_model=QueriesOut)
def ask(
    product_id: ProductId,
    body: QueriesIn,
    request: Request,
    session: SessionDep,
    db: DbDep,
    grant: GrantDep,
    raw: Annotated[bytes, Depends(raw_body)],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Evaluate each blinded point and return its bucket's sealed table (one billed unit a query)."""
    settings: Settings = request.app.state.settings
    fingerprint = (
        metering.fingerprint(request.method, request.url.path, request.url.query, raw)
        if idempotency_key is not None
        else None
    )
    try:
        answered = service.query(
            session,
            settings=settings,
            grant=grant,
            product_id=product_id,
            purpose=body.purpose,
            prefix_bits=body.prefix_bits,
            queries=body.queries,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
    except DomainError as exc:
        with db.unit_of_work() as audit_session:
            access_service.record_refusal(
                audit_session,
                caller=grant.institution,
                product_id=product_id,
                usccs=[],
                purpose=body.purpose.value,
                error=exc,
            )
        raise
    # the answer, its usage events and its audit entry commit before a byte of it is sent
    session.commit()
    return JSONResponse(answered.body, headers=answered.headers)
