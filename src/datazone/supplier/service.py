"""Supplier registry: government departments and other suppliers, and their admission status.

The status moves only through the lifecycle service (which checks the state machine
and records who, when and why); this module stores what it decided.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.errors import Conflict, NotFound
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
    from datazone.lifecycle import service as lifecycle_service  # lifecycle reads suppliers too

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
    """Store a status the lifecycle service has already checked and recorded."""
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
