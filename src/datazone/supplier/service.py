"""Supplier registry: government departments and other suppliers, and their admission.

A supplier applies, a reviewer admits or rejects it, and an admitted supplier may be
blacklisted and reinstated; every move is checked against the lifecycle state machine
and recorded (who, when, why) before its status changes here.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.errors import Conflict, NotFound
from datazone.lifecycle import service as lifecycle_service
from datazone.principal.models import Principal
from datazone.supplier.models import Supplier
from datazone.supplier.schemas import SupplierSpec

REGISTERED_BY_OPERATOR = "registered by operator"


def apply_supplier(
    session: Session, *, spec: SupplierSpec, by: Principal | None = None
) -> tuple[Supplier, bool]:
    """Create or update a supplier from its spec; returns (supplier, created).

    The operator registers departments it knows: they are admitted at once, and that
    admission is recorded as a transition like any other. Updating keeps the status.
    """
    existing = session.get(Supplier, spec.id)
    if existing is None:
        lifecycle_service.transition(
            session,
            subject_type="supplier",
            subject_id=spec.id,
            from_state=None,
            to_state="admitted",
            by=by,
            by_name="operator",
            reason=REGISTERED_BY_OPERATOR,
        )
        supplier = Supplier(
            id=spec.id, name=spec.name, name_en=spec.name_en, kind=spec.kind, admission_status="admitted"
        )
        session.add(supplier)
        session.flush()
        return supplier, True
    existing.name, existing.name_en, existing.kind = spec.name, spec.name_en, spec.kind
    session.flush()
    return existing, False


def create_applicant(session: Session, *, spec: SupplierSpec, attachments: list[dict[str, Any]]) -> Supplier:
    """A supplier that applied for admission (status applied); the caller records the transition."""
    if session.get(Supplier, spec.id) is not None:
        raise Conflict(
            f"a supplier {spec.id!r} exists already; choose another id, or act on the existing one",
            supplier_id=spec.id,
        )
    supplier = Supplier(
        id=spec.id,
        name=spec.name,
        name_en=spec.name_en,
        kind=spec.kind,
        admission_status="applied",
        attachments=attachments,
    )
    session.add(supplier)
    session.flush()
    return supplier


def set_admission_status(
    session: Session, *, supplier_id: str, status: str, attachments: list[dict[str, Any]] | None = None
) -> Supplier:
    """Store a status `_supplier_move` has already checked and recorded."""
    supplier = get_supplier(session, supplier_id=supplier_id, for_update=True)
    supplier.admission_status = status
    if attachments:
        supplier.attachments = [*supplier.attachments, *attachments]
    session.flush()
    return supplier


def get_supplier(session: Session, *, supplier_id: str, for_update: bool = False) -> Supplier:
    supplier = session.get(Supplier, supplier_id, with_for_update=for_update)
    if supplier is None:
        raise NotFound(f"no supplier {supplier_id!r}; register it with `datazone department apply`")
    return supplier


def list_suppliers(session: Session, *, status: str | None = None) -> list[Supplier]:
    q = sa.select(Supplier).order_by(Supplier.id)
    if status:
        q = q.where(Supplier.admission_status == status)
    return list(session.scalars(q))


def admission_statuses(session: Session, *, supplier_ids: list[str]) -> dict[str, str]:
    if not supplier_ids:
        return {}
    q = sa.select(Supplier.id, Supplier.admission_status).where(Supplier.id.in_(set(supplier_ids)))
    return {sid: status for sid, status in session.execute(q)}


# --- admission ------------------------------------------------------------------------------


def _supplier_move(
    session: Session,
    *,
    supplier_id: str,
    to_state: str,
    by: Principal | None,
    reason: str,
    attachments: list[dict[str, Any]] | None = None,
    by_name: str | None = None,
) -> Supplier:
    supplier = get_supplier(session, supplier_id=supplier_id, for_update=True)
    lifecycle_service.transition(
        session,
        subject_type="supplier",
        subject_id=supplier_id,
        from_state=supplier.admission_status,
        to_state=to_state,
        by=by,
        by_name=by_name,
        reason=reason,
        detail={"attachments": attachments} if attachments else None,
    )
    return set_admission_status(
        session, supplier_id=supplier_id, status=to_state, attachments=attachments
    )


def apply_for_admission(
    session: Session,
    *,
    spec: SupplierSpec,
    attachments: list[dict[str, Any]],
    by: Principal,
    reason: str = "applied for admission",
) -> Supplier:
    """A supplier applies (status applied); a reviewer then admits or rejects it."""
    lifecycle_service.transition(
        session,
        subject_type="supplier",
        subject_id=spec.id,
        from_state=None,
        to_state="applied",
        by=by,
        reason=reason,
        detail={"attachments": attachments} if attachments else None,
    )
    return create_applicant(session, spec=spec, attachments=attachments)


def admit_supplier(
    session: Session,
    *,
    supplier_id: str,
    by: Principal | None,
    reason: str,
    attachments: list[dict[str, Any]] | None = None,
) -> Supplier:
    return _supplier_move(
        session, supplier_id=supplier_id, to_state="admitted", by=by, reason=reason, attachments=attachments
    )


def reject_supplier(
    session: Session,
    *,
    supplier_id: str,
    by: Principal | None,
    reason: str,
    attachments: list[dict[str, Any]] | None = None,
) -> Supplier:
    return _supplier_move(
        session, supplier_id=supplier_id, to_state="rejected", by=by, reason=reason, attachments=attachments
    )


def blacklist_supplier(session: Session, *, supplier_id: str, by: Principal | None, reason: str) -> Supplier:
    """Blacklist a supplier: from the next request on, `require_in_use` refuses all its datasets."""
    return _supplier_move(session, supplier_id=supplier_id, to_state="blacklisted", by=by, reason=reason)


def reinstate_supplier(session: Session, *, supplier_id: str, by: Principal | None, reason: str) -> Supplier:
    supplier = get_supplier(session, supplier_id=supplier_id)
    if supplier.admission_status != "blacklisted":
        # reinstatement is only out of the blacklist; name the move that fits instead
        nexts = lifecycle_service.allowed("supplier", supplier.admission_status)
        raise lifecycle_service.IllegalTransition(
            f"supplier {supplier_id!r} is {supplier.admission_status}, not blacklisted: there is nothing to "
            "reinstate" + (f" (it may move to: {', '.join(nexts)})" if nexts else ""),
            subject_type="supplier",
            subject_id=supplier_id,
            state=supplier.admission_status,
            allowed=list(nexts),
        )
    return _supplier_move(session, supplier_id=supplier_id, to_state="admitted", by=by, reason=reason)


def require_admission_readable(*, supplier_id: str, viewer: Principal) -> None:
    """A supplier's admission record, history and scorecard are read by the operator and by the
    department itself; anyone else gets 404, so existence does not leak."""
    if viewer.kind == "operator":
        return
    if viewer.kind == "department" and viewer.supplier_id == supplier_id:
        return
    raise NotFound(f"no supplier {supplier_id!r}")
