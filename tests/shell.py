"""What the tests of the operator's shell commands share: the audit entries a change left."""

from __future__ import annotations

import sqlalchemy as sa

from datazone.audit.models import AuditEntry
from datazone.db import Database


def audited(db: Database, *, object_type: str, object_id: str) -> list[tuple[str, str, str]]:
    """(action, actor kind, actor name) of every committed entry about one object, oldest first."""
    with db.unit_of_work() as s:
        rows = s.execute(
            sa.select(AuditEntry.action, AuditEntry.actor_kind, AuditEntry.actor_name)
            .where(AuditEntry.object_type == object_type, AuditEntry.object_id == object_id)
            .order_by(AuditEntry.id)
        )
        return [(r.action, r.actor_kind, r.actor_name) for r in rows]
