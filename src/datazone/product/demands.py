"""Demands for data (需求申请): an institution, or the operator, says what data it needs and
why; a curator accepts or declines it, and marks it fulfilled by the datasets and the
product that answer it. Each move goes through the lifecycle state machine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.dataset import service as dataset_service
from datazone.errors import Forbidden, InvalidSpec, NotFound
from datazone.lifecycle import service as lifecycle_service
from datazone.principal.models import Principal
from datazone.principal.service import a_kind
from datazone.product import service as product_service
from datazone.product.models import DemandRequest
from datazone.supplier import service as supplier_service


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The demands the viewer may read, as a WHERE clause (every list and get of demands uses it):
    the operator all, an institution those filed for it, anyone else none."""
    if viewer.kind == "operator":
        return sa.true()
    if viewer.kind == "institution":
        return DemandRequest.institution_id == viewer.id
    return sa.false()


def get_demand(
    session: Session, *, demand_id: int, viewer: Principal, for_update: bool = False
) -> DemandRequest:
    """A demand the viewer may see: an institution sees its own only (404 for another's)."""
    q = sa.select(DemandRequest).where(DemandRequest.id == demand_id, readable_by(viewer))
    if for_update:
        q = q.with_for_update().execution_options(populate_existing=True)
    demand = session.scalar(q)
    if demand is None:
        raise NotFound(f"no demand request {demand_id}")
    return demand


def file_demand(
    session: Session,
    *,
    by: Principal,
    title: str,
    description: str = "",
    purposes: Sequence[str] = (),
    wanted_fields: Sequence[str] = (),
    wanted_departments: Sequence[str] = (),
) -> DemandRequest:
    """An institution (for itself) or the operator files a demand for data: state submitted."""
    if by.kind not in ("institution", "operator"):
        raise Forbidden(f"only an institution or the operator may file a demand; you are {a_kind(by.kind)}")
    problems: list[dict[str, Any]] = []
    if not title.strip():
        problems.append({"location": "title", "problem": "say what data is wanted: 'title' is empty"})
    depts = list(dict.fromkeys(wanted_departments))
    known = supplier_service.admission_statuses(session, supplier_ids=depts)
    for i, d in enumerate(depts):
        if d not in known:
            problems.append({"location": f"wanted_departments.{i}", "problem": f"no supplier {d!r}"})
    if problems:
        raise InvalidSpec("; ".join(p["problem"] for p in problems), errors=problems)
    demand = DemandRequest(
        title=title.strip(),
        description=description,
        purposes=list(dict.fromkeys(purposes)),
        wanted_fields=list(dict.fromkeys(wanted_fields)),
        wanted_departments=depts,
        state="submitted",
        filed_by_id=by.id,
        filed_by_name=by.name,
        institution_id=by.id if by.kind == "institution" else None,
        fulfilled_dataset_ids=[],
    )
    session.add(demand)
    session.flush()
    lifecycle_service.transition(
        session,
        subject_type="demand",
        subject_id=str(demand.id),
        from_state=None,
        to_state="submitted",
        by=by,
        reason="demand filed",
        supplier_ids=depts,
        institution_id=demand.institution_id,
    )
    return demand


def list_demands(session: Session, *, viewer: Principal, state: str | None = None) -> list[DemandRequest]:
    q = sa.select(DemandRequest).where(readable_by(viewer)).order_by(DemandRequest.id)
    if state:
        q = q.where(DemandRequest.state == state)
    return list(session.scalars(q))


def _demand_move(
    session: Session, *, demand: DemandRequest, to_state: str, by: Principal, reason: str,
    detail: dict[str, Any] | None = None,
) -> DemandRequest:  # fmt: skip
    lifecycle_service.transition(
        session,
        subject_type="demand",
        subject_id=str(demand.id),
        from_state=demand.state,
        to_state=to_state,
        by=by,
        reason=reason,
        supplier_ids=demand.wanted_departments,
        institution_id=demand.institution_id,
        detail=detail,
    )
    demand.state = to_state
    session.flush()
    return demand


def accept_demand(session: Session, *, demand_id: int, by: Principal, reason: str) -> DemandRequest:
    demand = get_demand(session, demand_id=demand_id, viewer=by, for_update=True)
    return _demand_move(session, demand=demand, to_state="accepted", by=by, reason=reason)


def decline_demand(session: Session, *, demand_id: int, by: Principal, reason: str) -> DemandRequest:
    demand = get_demand(session, demand_id=demand_id, viewer=by, for_update=True)
    return _demand_move(session, demand=demand, to_state="declined", by=by, reason=reason)


def cancel_demand(session: Session, *, demand_id: int, by: Principal, reason: str) -> DemandRequest:
    """The filing institution withdraws its demand, or the operator cancels it."""
    demand = get_demand(session, demand_id=demand_id, viewer=by, for_update=True)
    return _demand_move(session, demand=demand, to_state="cancelled", by=by, reason=reason)


def fulfil_demand(
    session: Session,
    *,
    demand_id: int,
    by: Principal,
    reason: str,
    dataset_ids: Sequence[str] = (),
    product_id: str | None = None,
) -> DemandRequest:
    """accepted -> fulfilled, linking the dataset(s) and/or product that satisfy the demand."""
    demand = get_demand(session, demand_id=demand_id, viewer=by, for_update=True)
    ids = list(dict.fromkeys(dataset_ids))
    problems: list[dict[str, Any]] = []
    if not ids and product_id is None:
        problems.append(
            {"location": "(body)", "problem": "name the dataset_ids or the product_id that fulfil the demand"}
        )
    known = dataset_service.admission_states(session, dataset_ids=ids)
    for i, d in enumerate(ids):
        if d not in known:
            problems.append({"location": f"dataset_ids.{i}", "problem": f"no dataset {d!r}"})
    if product_id is not None:
        try:
            product_service.get_product(session, product_id=product_id)
        except NotFound:
            problems.append({"location": "product_id", "problem": f"no product {product_id!r}"})
    if problems:
        raise InvalidSpec("; ".join(p["problem"] for p in problems), errors=problems)
    _demand_move(
        session,
        demand=demand,
        to_state="fulfilled",
        by=by,
        reason=reason,
        detail={"dataset_ids": ids, "product_id": product_id},
    )
    demand.fulfilled_dataset_ids = ids
    demand.fulfilled_product_id = product_id
    session.flush()
    return demand


def require_history_readable(session: Session, *, demand_id: str, viewer: Principal) -> None:
    """A demand's history is read by whoever may read the demand (404 otherwise)."""
    if not demand_id.isdigit():
        raise NotFound(f"no demand {demand_id!r}")
    get_demand(session, demand_id=int(demand_id), viewer=viewer)
