from __future__ import annotations

from fastapi import APIRouter

from datazone.deps import PrincipalDep, SessionDep
from datazone.supplier import service
from datazone.supplier.schemas import SupplierOut

router = APIRouter(prefix="/v1/departments", tags=["departments"])


@router.get("", response_model=list[SupplierOut])
def list_departments(session: SessionDep, _: PrincipalDep) -> list[SupplierOut]:
    return [SupplierOut.model_validate(s) for s in service.list_suppliers(session)]
