"""The lifecycle history route: every recorded transition of a subject, to whoever may read
that subject. Who may read it is each owning domain's answer, handed in by the app, so this
package imports none of the domains whose states it keeps."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import APIRouter
from sqlalchemy.orm import Session

from datazone.deps import PrincipalDep, SessionDep
from datazone.errors import NotFound
from datazone.lifecycle import service
from datazone.lifecycle.schemas import TransitionOut
from datazone.principal.models import Principal

# (session, subject id, viewer) -> None, or NotFound when the viewer may not read the subject
HistoryGuard = Callable[[Session, str, Principal], None]


def history_router(guards: Mapping[str, HistoryGuard]) -> APIRouter:
    """The history route. Operators read every history and products' histories are public;
    anyone else reads a subject only if its type's guard lets them (404 otherwise, so
    existence does not leak; a type without a guard is the operator's alone)."""
    router = APIRouter(prefix="/v1/lifecycle", tags=["lifecycle"])

    @router.get("/{subject_type}/{subject_id}/history", response_model=list[TransitionOut])
    def history(
        subject_type: str, subject_id: str, session: SessionDep, principal: PrincipalDep
    ) -> list[TransitionOut]:
        """Every transition of a supplier, dataset, product or demand: who, when, why."""
        if subject_type not in service.MACHINES:
            raise NotFound(f"no lifecycle {subject_type!r}; subjects: {', '.join(service.MACHINES)}")
        if principal.kind != "operator" and subject_type != "product":
            guard = guards.get(subject_type)
            if guard is None:
                raise NotFound(f"no {subject_type} {subject_id!r}")
            guard(session, subject_id, principal)
        return [
            TransitionOut.model_validate(t)
            for t in service.history(session, subject_type=subject_type, subject_id=subject_id)
        ]

    return router
