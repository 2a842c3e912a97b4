"""Institution contracts: the agreement that lets an institution call products for stated
purposes in a period, and the clearance that decides what its answers show in clear.

`require_contract` runs on every product request (one indexed query, no cache), so a
suspension or termination holds from the very next request on every replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.contract.models import Contract
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from datazone.metering import service as metering_service
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.purposes import Purpose

DEFAULT_CLEARANCE = 2
DEFAULT_MAX_BATCH = 1000
PURPOSES = frozenset(p.value for p in Purpose)


class ContractRequired(Forbidden):
    type = "contract-required"
    title = "No contract covers this call"


class InvalidContract(InvalidSpec):
    type = "invalid-contract"
    title = "The contract is not valid"


def unknown_products(session: Session, *, product_ids: Iterable[str]) -> list[str]:
    """The ids among `product_ids` that name no product in the catalog (each once, in order)."""
    # imported here: the catalog imports nothing of ours, and loading it lazily keeps
    # the authorization domains importable on their own
    from datazone.product import service as product_service

    unknown: list[str] = []
    for product_id in dict.fromkeys(product_ids):
        try:
            product_service.get_product(session, product_id=product_id)
        except NotFound:
            unknown.append(product_id)
    return unknown


def purpose_problem(purpose: str) -> str | None:
    if purpose in PURPOSES:
        return None
    return f"{purpose!r} is not a purpose; purposes: {', '.join(p.value for p in Purpose)}"


def institution_problem(session: Session, *, institution_id: int) -> str | None:
    """Why `institution_id` does not name an institution, or None when it does."""
    try:
        principal = principal_service.get_principal(session, principal_id=institution_id)
    except NotFound:
        return f"no principal {institution_id}; create the institution with `datazone principal create`"
    if principal.kind != "institution":
        article = "an" if principal.kind[0] in "aeiou" else "a"
        return (
            f"principal {institution_id} ({principal.name}) is {article} {principal.kind}, not an institution"
        )
    return None


def _now() -> datetime:
    return datetime.now(UTC)



def create_contract(
    session: Session,
    *,
    institution_id: int,
    purposes: Sequence[str],
    products: Sequence[str],
    clearance: int = DEFAULT_CLEARANCE,
    valid_from: datetime,
    valid_to: datetime,
    by: Principal,
    max_batch: int = DEFAULT_MAX_BATCH,
    plan_id: str | None = None,
    psi_max_set: int | None = None,
    scoring_max_batch: int | None = None,
) -> Contract:
    """Sign a contract for an institution under a plan (default: the public default plan).
    Every problem is listed at once; nothing is written on any."""
    principal_service.require_role(by, "curator", "sign contracts")
    errors: list[dict[str, Any]] = []

    def problem(location: str, text: str) -> None:
        errors.append({"location": location, "problem": text})

    if (why := institution_problem(session, institution_id=institution_id)) is not None:
        problem("institution_id", why)
    if not purposes:
        problem("purposes", "name at least one purpose")
    for i, p in enumerate(purposes):
        if (why := purpose_problem(p)) is not None:
            problem(f"purposes[{i}]", why)
    if not products:
        problem("products", "name at least one product")
    for pid in unknown_products(session, product_ids=products):
        problem("products", f"no product {pid!r} in the catalog; apply it with `datazone product apply`")
    if not 1 <= clearance <= 4:
        problem("clearance", f"clearance is 1..4 (grade 5 never leaves the zone), not {clearance}")
    if max_batch < 1:
        problem("max_batch", f"max_batch must be at least 1, not {max_batch}")
    if psi_max_set is not None and psi_max_set < 1:
        problem("psi_max_set", f"psi_max_set must be at least 1 (or left out), not {psi_max_set}")
    if scoring_max_batch is not None and scoring_max_batch < 1:
        problem(
            "scoring_max_batch", f"scoring_max_batch must be at least 1 (or left out), not {scoring_max_batch}"
        )
    plan_id = plan_id if plan_id is not None else metering_service.default_plan_id()
    if why := metering_service.contract_plan_problem(session, plan_id=plan_id, institution_id=institution_id):
        problem("plan_id", why)
    errors.extend(period_problems(valid_from, valid_to))
    if errors:
        raise InvalidContract(
            "the contract is not valid, nothing was written: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in errors),
            errors=errors,
        )
    contract = Contract(
        institution_id=institution_id,
        purposes=list(dict.fromkeys(purposes)),
        products=list(dict.fromkeys(products)),
        clearance=clearance,
        valid_from=valid_from,
        valid_to=valid_to,
        status="active",
        max_batch=max_batch,
        psi_max_set=psi_max_set,
        scoring_max_batch=scoring_max_batch,
        plan_id=plan_id,
        created_by=by.id,
    )
    session.add(contract)
    session.flush()
    audit_service.record(
        session,
        actor=by,
        action="contract.create",
        object_type="contract",
        object_id=str(contract.id),
        institution_id=institution_id,
        detail={
            "purposes": contract.purposes,
            "products": contract.products,
            "clearance": clearance,
            "valid_from": valid_from.isoformat(),
            "valid_to": valid_to.isoformat(),
            "max_batch": max_batch,
            "psi_max_set": psi_max_set,
            "scoring_max_batch": scoring_max_batch,
            "plan_id": plan_id,
        },
    )
    return contract


def period_problems(valid_from: datetime, valid_to: datetime) -> list[dict[str, Any]]:
    """Problems with a validity period (shared by contracts, grants and consents)."""
    errors: list[dict[str, Any]] = []
    for name, t in (("valid_from", valid_from), ("valid_to", valid_to)):
        if t.tzinfo is None:
            errors.append({"location": name, "problem": "give a time zone, e.g. 2026-01-01T00:00:00+08:00"})
    if errors:
        return errors
    if valid_to <= valid_from:
        errors.append(
            {
                "location": "valid_to",
                "problem": f"valid_to ({valid_to.isoformat()}) must be after valid_from ({valid_from.isoformat()})",
            }
        )
    elif valid_to <= _now():
        errors.append(
            {"location": "valid_to", "problem": f"valid_to ({valid_to.isoformat()}) is in the past"}
        )
    return errors


def get_contract(
    session: Session, *, contract_id: int, viewer: Principal, for_update: bool = False
) -> Contract:
    """A contract the viewer may see: the operator any, an institution its own (404 otherwise)."""
    if viewer.kind == "department":
        raise Forbidden("contracts are between the operator and institutions; a department sees none")
    q = sa.select(Contract).where(Contract.id == contract_id)
    if viewer.kind == "institution":
        q = q.where(Contract.institution_id == viewer.id)
    if for_update:
        q = q.with_for_update().execution_options(populate_existing=True)
    contract = session.scalar(q)
    if contract is None:
        raise NotFound(f"no contract {contract_id}")
    return contract


def list_contracts(
    session: Session, *, viewer: Principal, institution_id: int | None = None, status: str | None = None
) -> list[Contract]:
    """The operator sees every contract (optionally one institution's), an institution its own."""
    if viewer.kind == "department":
        raise Forbidden("contracts are between the operator and institutions; a department sees none")
    q = sa.select(Contract).order_by(Contract.id)
    if viewer.kind == "institution":
        q = q.where(Contract.institution_id == viewer.id)
    elif institution_id is not None:
        q = q.where(Contract.institution_id == institution_id)
    if status is not None:
        q = q.where(Contract.status == status)
    return list(session.scalars(q))


# status -> statuses it may move to
_MOVES: dict[str, tuple[str, ...]] = {
    "active": ("suspended", "terminated"),
    "suspended": ("active", "terminated"),
    "terminated": (),
}


def _change_status(
    session: Session, *, contract_id: int, to_status: str, action: str, by: Principal, reason: str
) -> Contract:
    principal_service.require_role(by, "curator", f"{action} contracts")
    if not reason or not reason.strip():
        raise InvalidContract(f"say why contract {contract_id} is to be {to_status}: 'reason' is empty")
    contract = get_contract(session, contract_id=contract_id, viewer=by, for_update=True)
    if to_status not in _MOVES[contract.status]:
        nexts = _MOVES[contract.status]
        raise Conflict(
            f"contract {contract_id} is {contract.status}; it cannot be {to_status}"
            + (f" (it may become: {', '.join(nexts)})" if nexts else " (terminated is final)"),
            contract_id=contract_id,
            contract_status=contract.status,
        )
    from_status = contract.status
    contract.status = to_status
    contract.status_changed_at = _now()
    contract.status_changed_by = by.id
    contract.status_reason = reason.strip()
    session.flush()
    audit_service.record(
        session,
        actor=by,
        action=f"contract.{action}",
        object_type="contract",
        object_id=str(contract.id),
        reason=reason.strip(),
        institution_id=contract.institution_id,
        detail={"from": from_status, "to": to_status},
    )
    return contract


def suspend_contract(session: Session, *, contract_id: int, by: Principal, reason: str) -> Contract:
    return _change_status(
        session, contract_id=contract_id, to_status="suspended", action="suspend", by=by, reason=reason
    )


def resume_contract(session: Session, *, contract_id: int, by: Principal, reason: str) -> Contract:
    return _change_status(
        session, contract_id=contract_id, to_status="active", action="resume", by=by, reason=reason
    )


def terminate_contract(session: Session, *, contract_id: int, by: Principal, reason: str) -> Contract:
    return _change_status(
        session, contract_id=contract_id, to_status="terminated", action="terminate", by=by, reason=reason
    )


def _why_not(contract: Contract, *, product_id: str, purpose: str, at: datetime) -> list[str]:
    reasons: list[str] = []
    if contract.status != "active":
        reasons.append(
            f"{contract.status}" + (f": {contract.status_reason}" if contract.status_reason else "")
        )
    if at < contract.valid_from:
        reasons.append(f"not valid before {contract.valid_from.isoformat()}")
    elif at >= contract.valid_to:
        reasons.append(f"expired at {contract.valid_to.isoformat()}")
    if purpose not in contract.purposes:
        reasons.append(f"purpose {purpose} not covered (covers {', '.join(contract.purposes)})")
    if product_id not in contract.products:
        reasons.append(f"product {product_id} not covered (covers {', '.join(contract.products)})")
    return reasons


def require_contract(
    session: Session, *, institution_id: int, product_id: str, purpose: str, at: datetime
) -> Contract:
    """The institution's contract covering this product and purpose at `at`, or `ContractRequired`.

    One indexed query over the institution's contracts (an institution holds a handful);
    the newest covering contract wins. The refusal names every contract and why it does not cover.
    """
    contracts = list(
        session.scalars(
            sa.select(Contract)
            .where(Contract.institution_id == institution_id)
            .order_by(Contract.id.desc())
            .execution_options(populate_existing=True)
        )
    )
    why: list[dict[str, Any]] = []
    for contract in contracts:
        reasons = _why_not(contract, product_id=product_id, purpose=purpose, at=at)
        if not reasons:
            return contract
        why.append(
            {
                "contract_id": contract.id,
                "status": contract.status,
                "valid_from": contract.valid_from.isoformat(),
                "valid_to": contract.valid_to.isoformat(),
                "reasons": reasons,
            }
        )
    if not why:
        detail = (
            f"institution {institution_id} has no contract with the operator; ask the operator to sign one "
            f"covering product {product_id} for purpose {purpose}"
        )
    else:
        detail = (
            f"none of your contracts covers product {product_id} for purpose {purpose} now: "
            + "; ".join(f"contract {w['contract_id']}: {', '.join(w['reasons'])}" for w in reversed(why))
            + "; ask the operator to extend or sign a contract"
        )
    raise ContractRequired(
        detail,
        institution_id=institution_id,
        product=product_id,
        purpose=purpose,
        contracts=list(reversed(why)),
    )


def clearances_for_product(session: Session, *, product_id: str) -> list[int]:
    """The clearances of the active contracts that name a product (what its PSI label tables need)."""
    rows = session.scalars(
        sa.select(Contract.clearance)
        .where(Contract.status == "active", Contract.products.contains([product_id]))
        .distinct()
        .order_by(Contract.clearance)
    )
    return [int(c) for c in rows]


@dataclass(frozen=True)
class ContractAllowance:
    """A live contract and what its plan leaves its institution in the current periods."""

    contract_id: int
    institution_id: int
    status: str
    products: list[str]
    valid_to: datetime
    plan_id: str
    allowance: metering_service.Allowance


def remaining_quota(
    session: Session, *, viewer: Principal, institution_id: int | None = None, at: datetime | None = None
) -> list[ContractAllowance]:
    """Each contract of one institution not yet ended at `at` (default now; active or suspended),
    with its plan's remaining quota, free units and spend cap, oldest contract first. An institution
    sees its own; the operator names the institution. The counters are the institution's (a quota
    counts its calls under every contract), as admission reads them: see `metering.plan_allowances`.
    Two queries: the contracts, then their plans joined to the counters."""
    at = at or _now()
    if viewer.kind == "institution":
        whose = viewer.id
    elif viewer.kind == "operator":
        if institution_id is None:
            raise InvalidSpec(
                "name the institution whose remaining quota to read",
                errors=[{"location": "institution_id", "problem": "required for the operator"}],
            )
        whose = institution_id
    else:
        raise Forbidden("contracts are between the operator and institutions; a department sees none")
    contracts = list(
        session.scalars(
            sa.select(Contract)
            .where(
                Contract.institution_id == whose,
                Contract.status.in_(("active", "suspended")),
                Contract.valid_to > at,
            )
            .order_by(Contract.id)
        )
    )
    allowances = metering_service.plan_allowances(
        session, institution_id=whose, plan_ids=sorted({c.plan_id for c in contracts}), at=at
    )
    return [
        ContractAllowance(
            contract_id=c.id,
            institution_id=c.institution_id,
            status=c.status,
            products=list(c.products),
            valid_to=c.valid_to,
            plan_id=c.plan_id,
            allowance=allowances[c.plan_id],
        )
        for c in contracts
    ]
