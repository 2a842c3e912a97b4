"""Secure scoring routes: model registration and review, online scores, batch jobs and their chunks.

Institutions call with an OAuth access token (like product lookups); the operator's staff with
their datazone key. Every change commits before the response is sent, and a refused score,
job or registration is audited in a transaction of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from datazone.access import pipeline
from datazone.access.api import GrantDep, IdempotencyDep, refusals_audited
from datazone.deps import DbDep, ReviewerDep, SessionDep, SettingsDep
from datazone.errors import Forbidden, Unauthorized
from datazone.oauth import resource
from datazone.oauth.resource import AccessGrant
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.scoring import service
from datazone.scoring.schemas import (
    JOB_ID,
    MODEL_ID,
    ChunkOut,
    JobIn,
    JobOut,
    ModelOut,
    ModelState,
    RetireIn,
    ReviewIn,
    ScoreIn,
    ScoreOut,
)

router = APIRouter(prefix="/v1/scoring", tags=["secure scoring"])

ModelId = Annotated[str, Path(pattern=MODEL_ID)]
JobId = Annotated[str, Path(pattern=JOB_ID)]
_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    """Who calls a route both sides use: an institution (its access token) or operator staff (a key)."""

    principal: Principal
    grant: AccessGrant | None

    @property
    def institution_id(self) -> int | None:
        """Whose models the caller sees: an institution its own, the operator all."""
        return self.principal.id if self.principal.kind == "institution" else None


def caller(
    session: SessionDep,
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if creds is None:
        raise Unauthorized(
            "send 'Authorization: Bearer <access token>' (institutions, from POST /oauth/token) or "
            "'Authorization: Bearer <datazone key>' (the operator's staff)"
        )
    if creds.credentials.startswith("dzk_"):
        principal = principal_service.authenticate(session, token=creds.credentials)
        if principal.kind not in ("institution", "operator"):
            raise Forbidden(
                f"scoring models are an institution's and the operator's; you are {principal.kind}"
            )
        return Caller(principal, None)
    grant = resource.authenticate_access_token(session, token=creds.credentials, settings=settings)
    return Caller(grant.institution, grant)


CallerDep = Annotated[Caller, Depends(caller)]


# ---------------------------------------------------------------- models


@router.post("/models", status_code=201, response_model=ModelOut)
def register_model(
    document: Annotated[dict[str, Any], Body(description="the output of privacy.scoring.encrypt_model")],
    session: SessionDep,
    db: DbDep,
    grant: GrantDep,
) -> JSONResponse:
    """Register a model (its weights or points Paillier-encrypted); it scores once an operator approves it."""
    product, purpose = document.get("product"), document.get("purpose")
    with refusals_audited(
        db,
        grant,
        product_id=product if isinstance(product, str) else None,
        purpose=purpose if isinstance(purpose, str) else None,
    ):
        model = service.register_model(session, grant=grant, document=document)
    body = service.model_view(model)
    session.commit()
    return JSONResponse(body, status_code=201)


@router.get("/models", response_model=list[ModelOut])
def list_models(
    session: SessionDep, who: CallerDep, state: Annotated[ModelState | None, Query()] = None
) -> list[dict[str, Any]]:
    """An institution's own models; the operator's staff see every institution's."""
    return [
        service.model_view(m)
        for m in service.list_models(session, institution_id=who.institution_id, state=state)
    ]


@router.get("/models/{model_id}", response_model=ModelOut)
def get_model(model_id: ModelId, session: SessionDep, who: CallerDep) -> dict[str, Any]:
    """One scoring model: its product, state, features and key fingerprint (never its weights)."""
    return service.model_view(
        service.get_model(session, model_id=model_id, institution_id=who.institution_id)
    )


@router.post("/models/{model_id}/review", response_model=ModelOut)
def review_model(
    model_id: ModelId, body: ReviewIn, session: SessionDep, reviewer: ReviewerDep
) -> dict[str, Any]:
    """Approve or reject a model pending review (an operator with the reviewer role)."""
    model = service.review_model(
        session, model_id=model_id, by=reviewer, decision=body.decision, reason=body.reason
    )
    return service.model_view(model)


@router.post("/models/{model_id}/retire", response_model=ModelOut)
def retire_model(model_id: ModelId, body: RetireIn, session: SessionDep, who: CallerDep) -> dict[str, Any]:
    """Retire a model (its institution or the operator): no more scores, and its running jobs stop."""
    model = service.retire_model(session, model_id=model_id, by=who.principal, reason=body.reason)
    return service.model_view(model)


# ---------------------------------------------------------------- scores


@router.post("/scores", response_model=ScoreOut)
def score(
    body: ScoreIn,
    session: SessionDep,
    settings: SettingsDep,
    db: DbDep,
    grant: GrantDep,
    idempotency: IdempotencyDep,
) -> JSONResponse:
    """One enterprise's encrypted score (billed, counted against its cap, audited)."""
    scored = pipeline.run_audited(
        db, session, idempotency.call(grant), service.OneScore(settings=settings, model_id=body.model, uscc=body.uscc)
    )
    # the score commits with its usage event, tally and audit entry before a byte of it is sent
    session.commit()
    return JSONResponse(scored.body, status_code=scored.status, headers=scored.headers)


# ---------------------------------------------------------------- jobs


@router.post("/jobs", status_code=201, response_model=JobOut)
def create_job(
    body: JobIn,
    session: SessionDep,
    settings: SettingsDep,
    db: DbDep,
    grant: GrantDep,
    idempotency: IdempotencyDep,
) -> JSONResponse:
    """Queue a batch of enterprises for scoring (the found ones billed now); the same Idempotency-Key returns the same job."""
    created = pipeline.run_audited(
        db,
        session,
        idempotency.call(grant),
        service.BatchScoring(settings=settings, model_id=body.model, usccs=body.usccs),
    )
    out = service.job_view(created.job)
    session.commit()
    return JSONResponse(out, status_code=created.status, headers=created.headers)


@router.get("/jobs/{job_id}", response_model=JobOut)
def job_status(job_id: JobId, session: SessionDep, grant: GrantDep) -> dict[str, Any]:
    """A scoring job's state and progress, chunk by chunk."""
    return service.job_view(service.get_job(session, institution_id=grant.institution.id, job_id=job_id))


@router.get("/jobs/{job_id}/chunks/{index}", response_model=ChunkOut)
def job_chunk(
    job_id: JobId,
    index: Annotated[int, Path(ge=0, le=10_000_000)],
    session: SessionDep,
    grant: GrantDep,
) -> Response:
    """A computed chunk: the same bytes every time (a dropped download resumes with the same result)."""
    data = service.chunk_bytes(session, institution_id=grant.institution.id, job_id=job_id, index=index)
    return Response(data, media_type="application/json", headers={"Cache-Control": "private, max-age=86400"})
