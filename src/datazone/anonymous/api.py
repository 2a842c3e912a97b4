"""Anonymous-query routes for institutions: the live table's parameters, and queries.

Like product answers, a request's answer, usage events and audit entry commit before the
response is sent, and a refusal is audited in a transaction of its own.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from datazone.access import pipeline
from datazone.access.api import GrantDep, IdempotencyDep
from datazone.anonymous import service
from datazone.anonymous.schemas import ParametersOut, QueriesIn, QueriesOut
from datazone.deps import DbDep, SessionDep, SettingsDep

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
    session: SessionDep,
    settings: SettingsDep,
    db: DbDep,
    grant: GrantDep,
    idempotency: IdempotencyDep,
) -> JSONResponse:
    """Evaluate each blinded point and return its bucket's sealed table (one billed unit a query)."""
    answered = pipeline.run_audited(
        db,
        session,
        idempotency.call(grant),
        service.AnonymousQueries(
            settings=settings,
            product_id=product_id,
            purpose=body.purpose,
            prefix_bits=body.prefix_bits,
            queries=body.queries,
        ),
    )
    # the answer, its usage events and its audit entry commit before a byte of it is sent
    session.commit()
    return JSONResponse(answered.body, headers=answered.headers)
