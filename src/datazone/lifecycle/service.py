"""Lifecycle of suppliers, datasets, demands and products in the four stages banks'
external-data systems use (intake, use, evaluation, retirement): the allowed transitions,
and a record of each one with who, when and why.

The owning domain keeps the current state on its own row and calls `transition()` to
move it; an illegal move raises `IllegalTransition` (409 problem+json naming the allowed
moves) and nothing is written.

A leaf: every domain with a lifecycle imports this module, and it imports none of them
(supplier admission lives in supplier/, dataset admission and quality in dataset/,
demands and ratings in product/).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.errors import Conflict, InvalidSpec
from datazone.lifecycle.models import Transition
from datazone.principal.models import Principal

# subject type -> state -> states it may move to
MACHINES: dict[str, dict[str, tuple[str, ...]]] = {
    "supplier": {
        "applied": ("admitted", "rejected"),
        "rejected": ("applied",),
        "admitted": ("blacklisted",),
        "blacklisted": ("admitted",),
    },
    "dataset": {
        "intake": ("under_review",),
        "under_review": ("admitted", "rejected"),
        "rejected": ("under_review",),
        "admitted": ("deprecated",),
        "deprecated": ("admitted", "retired"),
        "retired": (),
    },
    # a demand for data (需求申请); the filer may withdraw it before it is fulfilled
    "demand": {
        "submitted": ("accepted", "declined", "cancelled"),
        "accepted": ("fulfilled", "cancelled"),
        "declined": (),
        "fulfilled": (),
        "cancelled": (),
    },
    "product": {
        "draft": ("published", "retired"),
        "published": ("deprecated",),
        "deprecated": ("published", "retired"),
        "retired": (),
    },
}


class IllegalTransition(Conflict):
    type = "illegal-transition"
    title = "This lifecycle transition is not allowed"


def allowed(subject_type: str, state: str) -> tuple[str, ...]:
    return MACHINES[subject_type].get(state, ())


def transition(
    session: Session,
    *,
    subject_type: str,
    subject_id: str,
    from_state: str | None,
    to_state: str,
    by: Principal | None,
    reason: str,
    by_name: str | None = None,
    supplier_ids: Sequence[str] = (),
    institution_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> Transition:
    """Check and record one transition (from_state None: the subject is being created).

    The caller updates its own row's state after this returns, in the same transaction.
    """
    machine = MACHINES[subject_type]
    if not reason or not reason.strip():
        raise InvalidSpec(f"say why the {subject_type} {subject_id!r} moves to {to_state}: 'reason' is empty")
    if to_state not in machine:
        raise InvalidSpec(f"{to_state!r} is not a {subject_type} state; states: {', '.join(machine)}")
    if from_state is not None and to_state not in machine.get(from_state, ()):
        nexts = machine.get(from_state, ())
        raise IllegalTransition(
            f"{subject_type} {subject_id!r} is {from_state}; it cannot move to {to_state}"
            + (f" (it may move to: {', '.join(nexts)})" if nexts else f" ({from_state} is final)"),
            subject_type=subject_type,
            subject_id=subject_id,
            state=from_state,
            allowed=list(nexts),
        )
    t = Transition(
        subject_type=subject_type,
        subject_id=subject_id,
        from_state=from_state,
        to_state=to_state,
        by_id=by.id if by is not None else None,
        by_name=by.name if by is not None else (by_name or "system"),
        reason=reason.strip(),
    )
    session.add(t)
    audit_service.record(
        session,
        actor=by,
        actor_name=by_name,
        action=f"{subject_type}.{to_state}",
        object_type=subject_type,
        object_id=subject_id,
        reason=reason.strip(),
        detail={"from": from_state, "to": to_state, **(detail or {})},
        supplier_ids=[*supplier_ids, *([subject_id] if subject_type == "supplier" else [])],
        institution_id=institution_id,
    )
    session.flush()
    return t


def history(session: Session, *, subject_type: str, subject_id: str) -> list[Transition]:
    q = (
        sa.select(Transition)
        .where(Transition.subject_type == subject_type, Transition.subject_id == subject_id)
        .order_by(Transition.id)
    )
    return list(session.scalars(q))


# dataset states whose data may be served: a deprecated dataset still serves until retired
SERVING_STATES = ("admitted", "deprecated")
