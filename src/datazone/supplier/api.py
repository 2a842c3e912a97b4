from __future__ import annotations

from fastapi import APIRouter

from datazone.deps import PrincipalDep, SessionDep
from datazone.supplier import service
from datazone.supplier.schemas import SupplierOut

router = APIRouter(prefix="/v1/departments", tags=["departments"])


@router.get("", response_model=list[SupplierOut])
def list_departments(session: SessionDep, _: PrincipalDep) -> list[SupplierOut]:
    """The departments that supply data to the zone (any principal)."""
    return [SupplierOut.model_validate(s) for s in service.list_suppliers(session)]
