"""Supplier registry: government departments and other suppliers."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.errors import NotFound
from datazone.supplier.models import Supplier
from datazone.supplier.schemas import SupplierSpec


def apply_supplier(session: Session, *, spec: SupplierSpec) -> tuple[Supplier, bool]:
    """Create or update a supplier from its spec; returns (supplier, created)."""
    existing = session.get(Supplier, spec.id)
    if existing is None:
        supplier = Supplier(id=spec.id, name=spec.name, name_en=spec.name_en, kind=spec.kind)
        session.add(supplier)
        session.flush()
        return supplier, True
    existing.name, existing.name_en, existing.kind = spec.name, spec.name_en, spec.kind
    session.flush()
    return existing, False


def get_supplier(session: Session, *, supplier_id: str) -> Supplier:
    supplier = session.get(Supplier, supplier_id)
    if supplier is None:
        raise NotFound(f"no supplier {supplier_id!r}; register it with `datazone department apply`")
    return supplier


def list_suppliers(session: Session) -> list[Supplier]:
    return list(session.scalars(sa.select(Supplier).order_by(Supplier.id)))
