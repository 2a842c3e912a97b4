from __future__ import annotations

from fastapi import APIRouter

from datazone.deps import OperatorDep, PrincipalDep, ReviewerDep, SessionDep
from datazone.lifecycle.schemas import ReasonIn
from datazone.limits import QueryText, SinceQuery, UntilQuery, period_or_default
from datazone.supplier import scorecard, service
from datazone.supplier.schemas import (
    ScorecardOut,
    SupplierAdmissionOut,
    SupplierApplicationIn,
    SupplierDecisionIn,
    SupplierOut,
    SupplierSpec,
)

router = APIRouter(prefix="/v1/departments", tags=["departments"])
# mounted by the app where the lifecycle routes were, so routes match in the same order
admission_router = APIRouter(prefix="/v1/suppliers", tags=["lifecycle: suppliers"])


@router.get("", response_model=list[SupplierOut])
def list_departments(session: SessionDep, _: PrincipalDep) -> list[SupplierOut]:
    """The departments that supply data to the zone (any principal)."""
    return [SupplierOut.model_validate(s) for s in service.list_suppliers(session)]


# --- admission and scorecard -------------------------------------------------------------------


@admission_router.post("", response_model=SupplierAdmissionOut, status_code=201)
def apply_supplier(body: SupplierApplicationIn, session: SessionDep, by: OperatorDep) -> SupplierAdmissionOut:
    """File a supplier's application (status applied) with its documents; a reviewer decides."""
    spec = SupplierSpec(id=body.id, name=body.name, name_en=body.name_en, kind=body.kind)
    s = service.apply_for_admission(
        session,
        spec=spec,
        attachments=[a.model_dump(exclude_none=True) for a in body.attachments],
        by=by,
        reason=body.reason,
    )
    return SupplierAdmissionOut.model_validate(s)


@admission_router.get("", response_model=list[SupplierAdmissionOut])
def list_suppliers(
    session: SessionDep, _: OperatorDep, status: QueryText = None
) -> list[SupplierAdmissionOut]:
    """Supplier applications and admitted suppliers, optionally by status (the operator)."""
    return [
        SupplierAdmissionOut.model_validate(s)
        for s in service.list_suppliers(session, status=status)
    ]


@admission_router.get("/{supplier_id}", response_model=SupplierAdmissionOut)
def get_supplier(supplier_id: str, session: SessionDep, principal: PrincipalDep) -> SupplierAdmissionOut:
    """One supplier's admission record (the operator, or the department itself)."""
    service.require_admission_readable(supplier_id=supplier_id, viewer=principal)
    return SupplierAdmissionOut.model_validate(
        service.get_supplier(session, supplier_id=supplier_id)
    )


@admission_router.post("/{supplier_id}/admit", response_model=SupplierAdmissionOut)
def admit_supplier(
    supplier_id: str, body: SupplierDecisionIn, session: SessionDep, by: ReviewerDep
) -> SupplierAdmissionOut:
    """Admit an applied supplier (a reviewer): it may then publish datasets."""
    s = service.admit_supplier(
        session,
        supplier_id=supplier_id,
        by=by,
        reason=body.reason,
        attachments=[a.model_dump(exclude_none=True) for a in body.attachments],
    )
    return SupplierAdmissionOut.model_validate(s)


@admission_router.post("/{supplier_id}/reject", response_model=SupplierAdmissionOut)
def reject_supplier(
    supplier_id: str, body: SupplierDecisionIn, session: SessionDep, by: ReviewerDep
) -> SupplierAdmissionOut:
    """Reject a supplier's application, with the reason (a reviewer)."""
    s = service.reject_supplier(
        session,
        supplier_id=supplier_id,
        by=by,
        reason=body.reason,
        attachments=[a.model_dump(exclude_none=True) for a in body.attachments],
    )
    return SupplierAdmissionOut.model_validate(s)


@admission_router.post("/{supplier_id}/blacklist", response_model=SupplierAdmissionOut)
def blacklist_supplier(
    supplier_id: str, body: ReasonIn, session: SessionDep, by: ReviewerDep
) -> SupplierAdmissionOut:
    """Blacklist a supplier (a reviewer): its datasets stop serving."""
    return SupplierAdmissionOut.model_validate(
        service.blacklist_supplier(session, supplier_id=supplier_id, by=by, reason=body.reason)
    )


@admission_router.post("/{supplier_id}/reinstate", response_model=SupplierAdmissionOut)
def reinstate_supplier(
    supplier_id: str, body: ReasonIn, session: SessionDep, by: ReviewerDep
) -> SupplierAdmissionOut:
    """Lift a blacklisting (a reviewer)."""
    return SupplierAdmissionOut.model_validate(
        service.reinstate_supplier(session, supplier_id=supplier_id, by=by, reason=body.reason)
    )


@admission_router.get("/{supplier_id}/scorecard", response_model=ScorecardOut)
def supplier_scorecard(
    supplier_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> ScorecardOut:
    """A supplier's scorecard over a window: timeliness, quality and usage of its datasets."""
    service.require_admission_readable(supplier_id=supplier_id, viewer=principal)
    start, end = period_or_default(since, until)
    card = scorecard.supplier_scorecard(session, supplier_id=supplier_id, since=start, until=end)
    return ScorecardOut.model_validate(card)
