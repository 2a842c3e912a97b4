"""Product answers for institutions: thin routes over `access.service.deliver`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from datazone.access import service
from datazone.access.schemas import (
    BatchAnswerOut,
    BatchIn,
    EnterpriseAnswer,
    MaskingOut,
    ProductAnswerOut,
    ServedBy,
)
from datazone.db import Database
from datazone.deps import DbDep, PrincipalDep, SessionDep
from datazone.errors import DomainError
from datazone.principal.models import Principal
from datazone.purposes import Purpose

router = APIRouter(prefix="/v1/products", tags=["product answers"])

ProductId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{1,62}$")]


def _deliver(
    session: SessionDep,
    db: Database,
    caller: Principal,
    product_id: str,
    usccs: Sequence[str],
    purpose: Purpose,
    *,
    single: bool,
) -> service.Delivery:
    try:
        return service.deliver(
            session, caller=caller, product_id=product_id, usccs=usccs, purpose=purpose, require_found=single
        )
    except DomainError as exc:
        with db.unit_of_work() as audit_session:
            service.record_refusal(
                audit_session,
                caller=caller,
                product_id=product_id,
                usccs=[u[:32] for u in usccs],
                purpose=purpose.value,
                error=exc,
            )
        raise


def _lifecycle_headers(response: Response, d: service.Delivery) -> None:
    if d.served_state == "deprecated":
        response.headers["Deprecation"] = "true"
        if d.successor_id:
            response.headers["Link"] = f'</v1/catalog/products/{d.successor_id}>; rel="successor-version"'


@router.get("/{product_id}/enterprises/{uscc}", response_model=ProductAnswerOut)
def answer_one(
    product_id: ProductId,
    uscc: str,
    purpose: Annotated[Purpose, Query(description="why the institution asks")],
    session: SessionDep,
    db: DbDep,
    caller: PrincipalDep,
    response: Response,
) -> ProductAnswerOut:
    d = _deliver(session, db, caller, product_id, [uscc], purpose, single=True)
    code, answer = next(iter(d.answers.items()))
    assert answer is not None  # deliver(require_found=True) refused otherwise
    _lifecycle_headers(response, d)
    return ProductAnswerOut(
        product=ServedBy(id=d.served_id, requested=d.requested_id, state=d.served_state),
        purpose=d.purpose,
        as_of=d.as_of,
        computed_at=d.computed_at,
        data_versions=d.data_versions,
        masking=MaskingOut(clearance=d.clearance, fields=d.masking),
        contract_id=d.contract_id,
        grant_ids=d.grant_ids,
        uscc=code,
        answer=answer,
    )


@router.post("/{product_id}/enterprises", response_model=BatchAnswerOut)
def answer_batch(
    product_id: ProductId,
    body: BatchIn,
    session: SessionDep,
    db: DbDep,
    caller: PrincipalDep,
    response: Response,
) -> BatchAnswerOut:
    d = _deliver(session, db, caller, product_id, body.usccs, body.purpose, single=False)
    _lifecycle_headers(response, d)
    return BatchAnswerOut(
        product=ServedBy(id=d.served_id, requested=d.requested_id, state=d.served_state),
        purpose=d.purpose,
        as_of=d.as_of,
        computed_at=d.computed_at,
        data_versions=d.data_versions,
        masking=MaskingOut(clearance=d.clearance, fields=d.masking),
        contract_id=d.contract_id,
        grant_ids=d.grant_ids,
        results=[EnterpriseAnswer(uscc=c, found=a is not None, answer=a) for c, a in d.answers.items()],
    )
