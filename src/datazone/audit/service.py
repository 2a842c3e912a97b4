"""The audit trail: every control-plane change and every data access, sealed into a hash chain."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit.models import AuditEntry
from datazone.principal.models import Principal

OUTCOMES = ("ok", "refused", "failed")


def record(
    session: Session,
    *,
    actor: Principal | None,
    action: str,
    object_type: str,
    object_id: str,
    outcome: str = "ok",
    reason: str | None = None,
    purpose: str | None = None,
    entities: Iterable[str] = (),
    entity_count: int | None = None,
    supplier_ids: Iterable[str] = (),
    institution_id: int | None = None,
    detail: dict[str, Any] | None = None,
    actor_name: str | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction: it commits or rolls back with the change it records.

    `actor=None` is the system itself (scheduler, sealer); pass `actor_name` to say which.
    Never put a secret in `detail`.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    ents = sorted(set(entities))
    entry = AuditEntry(
        actor_id=actor.id if actor is not None else None,
        actor_name=actor.name if actor is not None else (actor_name or "system"),
        actor_kind=actor.kind if actor is not None else "system",
        action=action,
        object_type=object_type,
        object_id=object_id,
        purpose=purpose,
        entities=ents,
        entity_count=len(ents) if entity_count is None else entity_count,
        outcome=outcome,
        reason=reason,
        detail=detail or {},
        supplier_ids=sorted(set(supplier_ids)),
        institution_id=institution_id
        if institution_id is not None
        else (actor.id if actor is not None and actor.kind == "institution" else None),
    )
    session.add(entry)
    session.flush()
    return entry


# the action every product answer (and refusal) is recorded under
DATA_ACCESS = "product.answer"


@dataclass(frozen=True)
class UsageVolume:
    product_id: str
    day: date  # in Asia/Shanghai
    calls: int
    entities: int
    refused: int


def usage_volume(
    session: Session, *, since: datetime, until: datetime, product_id: str | None = None
) -> list[UsageVolume]:
    """Data accesses per product and Shanghai day, from the audit trail."""
    day = sa.func.date(sa.func.timezone("Asia/Shanghai", AuditEntry.at))
    q = (
        sa.select(
            AuditEntry.object_id,
            day,
            sa.func.count().filter(AuditEntry.outcome == "ok"),
            sa.func.coalesce(sa.func.sum(AuditEntry.entity_count).filter(AuditEntry.outcome == "ok"), 0),
            sa.func.count().filter(AuditEntry.outcome == "refused"),
        )
        .where(AuditEntry.action == DATA_ACCESS, AuditEntry.at >= since, AuditEntry.at < until)
        .group_by(AuditEntry.object_id, day)
        .order_by(AuditEntry.object_id, day)
    )
    if product_id is not None:
        q = q.where(AuditEntry.object_id == product_id)
    return [UsageVolume(p, d, int(c), int(e), int(r)) for p, d, c, e, r in session.execute(q)]
