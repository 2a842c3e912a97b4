from __future__ import annotations

from fastapi import APIRouter

from datazone.contract import service
from datazone.contract.schemas import ContractIn, ContractOut, StatusChangeIn
from datazone.deps import CuratorDep, PrincipalDep, SessionDep
from datazone.limits import DbId, QueryDbId, QueryText

router = APIRouter(prefix="/v1/contracts", tags=["contract"])


@router.post("", status_code=201)
def create_contract(body: ContractIn, session: SessionDep, curator: CuratorDep) -> ContractOut:
    """Sign a contract with an institution for products and purposes (a curator)."""
    contract = service.create_contract(
        session,
        institution_id=body.institution_id,
        purposes=body.purposes,
        products=body.products,
        clearance=body.clearance,
        valid_from=body.valid_from,
        valid_to=body.valid_to,
        max_batch=body.max_batch,
        psi_max_set=body.psi_max_set,
        scoring_max_batch=body.scoring_max_batch,
        plan_id=body.plan_id,
        by=curator,
    )
    return ContractOut.model_validate(contract)


@router.get("")
def list_contracts(
    session: SessionDep, principal: PrincipalDep, institution_id: QueryDbId = None, status: QueryText = None
) -> list[ContractOut]:
    """Contracts: an institution sees its own, the operator all (optionally by institution and status)."""
    contracts = service.list_contracts(
        session, viewer=principal, institution_id=institution_id, status=status
    )
    return [ContractOut.model_validate(c) for c in contracts]


@router.get("/{contract_id}")
def get_contract(contract_id: DbId, session: SessionDep, principal: PrincipalDep) -> ContractOut:
    """One contract with its products, purposes, clearance and status."""
    return ContractOut.model_validate(
        service.get_contract(session, contract_id=contract_id, viewer=principal)
    )


@router.post("/{contract_id}/suspend")
def suspend_contract(
    contract_id: DbId, body: StatusChangeIn, session: SessionDep, curator: CuratorDep
) -> ContractOut:
    """Suspend a contract, with the reason (a curator): its calls are refused until resumed."""
    c = service.suspend_contract(session, contract_id=contract_id, by=curator, reason=body.reason)
    return ContractOut.model_validate(c)


@router.post("/{contract_id}/resume")
def resume_contract(
    contract_id: DbId, body: StatusChangeIn, session: SessionDep, curator: CuratorDep
) -> ContractOut:
    """Resume a suspended contract (a curator)."""
    c = service.resume_contract(session, contract_id=contract_id, by=curator, reason=body.reason)
    return ContractOut.model_validate(c)


@router.post("/{contract_id}/terminate")
def terminate_contract(
    contract_id: DbId, body: StatusChangeIn, session: SessionDep, curator: CuratorDep
) -> ContractOut:
    """Terminate a contract for good (a curator)."""
    c = service.terminate_contract(session, contract_id=contract_id, by=curator, reason=body.reason)
    return ContractOut.model_validate(c)
