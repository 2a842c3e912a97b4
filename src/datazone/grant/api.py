from __future__ import annotations

from fastapi import APIRouter

from datazone.deps import DepartmentDep, PrincipalDep, SessionDep
from datazone.grant import service
from datazone.grant.models import Grant
from datazone.grant.schemas import GrantIn, GrantOut, RevokeIn
from datazone.principal.models import Principal

router = APIRouter(prefix="/v1/grants", tags=["grant"])


def _out(grant: Grant, viewer: Principal) -> GrantOut:
    out = GrantOut.model_validate(grant)
    out.status = service.grant_status(grant)
    if viewer.kind == "institution" and grant.institutions is not None:
        # an institution learns that the grant names it, not which other institutions it names
        out.institutions = [viewer.id]
    return out


@router.post("", status_code=201)
def create_grant(body: GrantIn, session: SessionDep, department: DepartmentDep) -> GrantOut:
    """Grant the use of the department's dataset to institutions, for products, purposes and a term."""
    grant = service.create_grant(
        session,
        department=body.department or department.supplier_id or "",
        datasets=body.datasets,
        purposes=body.purposes,
        products=body.products,
        institutions=body.institutions,
        valid_from=body.valid_from,
        valid_to=body.valid_to,
        by=department,
    )
    return _out(grant, department)


@router.get("")
def list_grants(
    session: SessionDep,
    principal: PrincipalDep,
    dataset: str | None = None,
    product: str | None = None,
    department: str | None = None,
    live: bool | None = None,
) -> list[GrantOut]:
    """Grants: a department sees its own, an institution those naming it, the operator all."""
    grants = service.list_grants(
        session, viewer=principal, department=department, dataset=dataset, product=product, live=live
    )
    return [_out(g, principal) for g in grants]


@router.get("/{grant_id}")
def get_grant(grant_id: str, session: SessionDep, principal: PrincipalDep) -> GrantOut:
    """One grant with its scope, term and state."""
    return _out(service.get_grant(session, grant_id=grant_id, viewer=principal), principal)


@router.post("/{grant_id}/revoke")
def revoke_grant(grant_id: str, body: RevokeIn, session: SessionDep, department: DepartmentDep) -> GrantOut:
    """Revoke a grant (its department): calls it covered are refused from now on."""
    grant = service.revoke_grant(session, grant_id=grant_id, by=department, reason=body.reason)
    return _out(grant, department)
