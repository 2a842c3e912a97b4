from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from datazone.consent import service
from datazone.consent.schemas import ConsentIn, ConsentOut, RevokeIn
from datazone.deps import InstitutionDep, PrincipalDep, SessionDep
from datazone.limits import DbId, QueryDbId, QueryText, page_limit

router = APIRouter(prefix="/v1/consents", tags=["consent"])


@router.post("", status_code=201)
def register_consents(
    body: list[ConsentIn] | ConsentIn, session: SessionDep, institution: InstitutionDep
) -> list[ConsentOut] | ConsentOut:
    """One consent, or a list of up to 1,000: all registered, or none."""
    items = body if isinstance(body, list) else [body]
    consents = service.register_consents(session, institution=institution, items=items)
    out = [ConsentOut.model_validate(c) for c in consents]
    return out if isinstance(body, list) else out[0]


@router.get("")
def list_consents(
    session: SessionDep,
    principal: PrincipalDep,
    uscc: QueryText = None,
    live: bool | None = None,
    institution_id: QueryDbId = None,
    after_id: QueryDbId = None,
    limit: Annotated[int, page_limit(service.MAX_BATCH)] = 100,
) -> list[ConsentOut]:
    """Enterprise consents: an institution sees its own, the operator all; oldest first, paged by after_id."""
    consents = service.list_consents(
        session,
        viewer=principal,
        uscc=uscc,
        live=live,
        institution_id=institution_id,
        after_id=after_id,
        limit=limit,
    )
    return [ConsentOut.model_validate(c) for c in consents]


@router.get("/{consent_id}")
def get_consent(consent_id: DbId, session: SessionDep, principal: PrincipalDep) -> ConsentOut:
    """One consent with its subject, scope, term and evidence reference."""
    return ConsentOut.model_validate(service.get_consent(session, consent_id=consent_id, viewer=principal))


@router.post("/{consent_id}/revoke")
def revoke_consent(
    consent_id: DbId, body: RevokeIn, session: SessionDep, institution: InstitutionDep
) -> ConsentOut:
    """Revoke a consent (its institution): calls about that enterprise are refused from now on."""
    consent = service.revoke_consent(session, consent_id=consent_id, by=institution, reason=body.reason)
    return ConsentOut.model_validate(consent)
