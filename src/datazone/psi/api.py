"""PSI routes: HTTP-native sessions for institutions (OpenMined's wire format, labeled or not),
engine jobs, and the operator's view of key epochs and precomputed artifacts.

Binary bodies are protobuf (`application/x-protobuf`: OpenMined's `Request`, `Response`,
`ServerSetup`) or a label table (`application/octet-stream`). Like product answers, every
change commits before the response is sent, and refusals are audited in a transaction of
their own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import partial
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from datazone.access import pipeline
from datazone.access.api import GrantDep, IdempotencyDep, raw_body, refusals_audited
from datazone.config import Settings
from datazone.db import Database
from datazone.deps import DbDep, OperatorDep, SessionDep, SettingsDep
from datazone.errors import InvalidSpec
from datazone.limits import MAX_CHUNK_BODY
from datazone.oauth.resource import AccessGrant
from datazone.openapi import content_responses
from datazone.principal import service as principal_service
from datazone.psi import service
from datazone.psi.models import PsiArtifact, PsiKeyEpoch
from datazone.psi.schemas import ArtifactOut, EpochOut, JobIn, JobOut, RotateIn, SessionIn, SessionOut

router = APIRouter(prefix="/v1/psi", tags=["private set intersection"])

PROTOBUF = "application/x-protobuf"
SessionId = Annotated[str, Path(pattern=r"^psi_[A-Za-z0-9_-]{8,60}$")]


def _session_refusals_audited(
    db: Database, grant: AccessGrant, session_id: str
) -> AbstractContextManager[None]:
    """A refusal about a session is audited under the session's product and purpose."""
    lookup = partial(service.session_product, institution_id=grant.institution.id, session_id=session_id)
    return refusals_audited(db, grant, subject_of=lookup)


@router.post("/sessions", status_code=201, response_model=SessionOut)
def open_session(
    body: SessionIn,
    session: SessionDep,
    settings: SettingsDep,
    db: DbDep,
    grant: GrantDep,
    idempotency: IdempotencyDep,
) -> JSONResponse:
    """Open a PSI session for a set of `set_size` enterprises (billed now, per item)."""
    opened = pipeline.run_audited(
        db,
        session,
        idempotency.call(grant),
        service.OpenSession(
            settings=settings,
            product_id=body.product,
            purpose=body.purpose,
            set_size=body.set_size,
            labeled=body.labeled,
        ),
    )
    session.commit()
    return JSONResponse(opened.body, status_code=201, headers=opened.headers)


@router.get("/sessions/{session_id}", response_model=SessionOut)
def session_status(session_id: SessionId, session: SessionDep, grant: GrantDep) -> dict[str, object]:
    """A PSI session's state, its product, slice and chunks answered."""
    row = service.get_session(session, institution_id=grant.institution.id, session_id=session_id)
    return service.session_body(row, chunks_done=service.chunks_done(session, session_id=row.id))


def _artifact(
    session_id: str, session: Session, settings: Settings, db: Database, grant: AccessGrant, media: str
) -> Response:
    with _session_refusals_audited(db, grant, session_id):
        data = service.session_artifact(session, settings=settings, grant=grant, session_id=session_id)
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


@router.get("/sessions/{session_id}/setup", response_class=Response, responses=content_responses(PROTOBUF))
def session_setup(
    session_id: SessionId, session: SessionDep, settings: SettingsDep, db: DbDep, grant: GrantDep
) -> Response:
    """The zone's side of the slice as an OpenMined `ServerSetup` (GCS), for a plain session."""
    row = service.get_session(session, institution_id=grant.institution.id, session_id=session_id)
    if row.labeled:
        raise InvalidSpec(f"session {session_id} is labeled: fetch its labels_url instead", check="psi_session")
    return _artifact(session_id, session, settings, db, grant, PROTOBUF)


@router.get(
    "/sessions/{session_id}/labels",
    response_class=Response,
    responses=content_responses("application/octet-stream"),
)
def session_labels(
    session_id: SessionId, session: SessionDep, settings: SettingsDep, db: DbDep, grant: GrantDep
) -> Response:
    """The encrypted label table of a labeled session's slice (every entry, so the zone cannot tell which you open)."""
    row = service.get_session(session, institution_id=grant.institution.id, session_id=session_id)
    if not row.labeled:
        raise InvalidSpec(f"session {session_id} is not labeled: fetch its setup_url instead", check="psi_session")
    return _artifact(session_id, session, settings, db, grant, "application/octet-stream")


@router.put(
    "/sessions/{session_id}/chunks/{index}", response_class=Response, responses=content_responses(PROTOBUF)
)
def answer_chunk(
    session_id: SessionId,
    index: Annotated[int, Path(ge=0, le=100_000_000)],
    session: SessionDep,
    settings: SettingsDep,
    db: DbDep,
    grant: GrantDep,
    body: Annotated[bytes, Depends(raw_body)],
    content_type: Annotated[str | None, Header(alias="Content-Type")] = None,
) -> Response:
    """Evaluate a chunk of blinded points (an OpenMined `Request`); the same chunk again is answered the same, free."""
    if (content_type or "").split(";")[0].strip() != PROTOBUF:
        raise InvalidSpec(f"send the chunk as {PROTOBUF} (an OpenMined PSI Request)", check="psi_request")
    if len(body) > MAX_CHUNK_BODY:
        raise InvalidSpec(f"a chunk body is at most {MAX_CHUNK_BODY} bytes", check="psi_request")
    with _session_refusals_audited(db, grant, session_id):
        answer = service.answer_chunk(
            session, settings=settings, grant=grant, session_id=session_id, index=index, body=body
        )
    # the chunk's answer and its audit entry commit before a byte of it is sent
    session.commit()
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return Response(answer.response, media_type=PROTOBUF, headers=headers)


@router.post("/jobs", status_code=201, response_model=JobOut)
def create_job(
    body: JobIn,
    session: SessionDep,
    settings: SettingsDep,
    db: DbDep,
    grant: GrantDep,
    idempotency: IdempotencyDep,
) -> JSONResponse:
    """Queue a PSI on SecretFlow's engine (billed now); join it with the returned ticket over the
    engine's link. The same Idempotency-Key and body again returns the same job, charged nothing
    more, with `Idempotent-Replayed: true` (and a fresh ticket while no worker has taken it)."""
    created = pipeline.run_audited(
        db,
        session,
        idempotency.call(grant),
        service.EngineJob(
            settings=settings,
            product_id=body.product,
            purpose=body.purpose,
            set_size=body.set_size,
            peer_address=body.peer_address,
            protocol=body.protocol,
            institution_certificate_pem=body.institution_certificate_pem,
            have_cache=body.have_cache,
        ),
    )
    out = {**service.job_body(created.job), "ticket": created.ticket}
    session.commit()
    return JSONResponse(
        out, status_code=created.status, headers={**created.headers, "Cache-Control": "no-store"}
    )


@router.get("/jobs/{job_id}", response_model=JobOut)
def job_status(
    job_id: Annotated[str, Path(pattern=r"^job_[A-Za-z0-9_-]{8,60}$")], session: SessionDep, grant: GrantDep
) -> dict[str, object]:
    """A PSI engine job's state and, once done, its result's location and counts."""
    return service.job_body(service.get_job(session, institution_id=grant.institution.id, job_id=job_id))


# ---------------------------------------------------------------- the operator's view


@router.get("/epochs", response_model=list[EpochOut])
def list_epochs(session: SessionDep, operator: OperatorDep) -> list[PsiKeyEpoch]:
    """Every PSI key epoch, oldest first (the operator)."""
    return service.list_epochs(session)


@router.post("/epochs", status_code=201, response_model=EpochOut)
def rotate(body: RotateIn, session: SessionDep, settings: SettingsDep, operator: OperatorDep) -> PsiKeyEpoch:
    """Start a new key epoch (the worker then precomputes every PSI product under it)."""
    principal_service.require_role(operator, "curator", "rotate the PSI key")
    return service.rotate_key(session, settings=settings, by=operator, reason=body.reason)


@router.get("/artifacts", response_model=list[ArtifactOut])
def list_artifacts(session: SessionDep, operator: OperatorDep) -> list[PsiArtifact]:
    """The precomputed PSI artifacts (setups, label tables) of the current epochs, newest first (the operator)."""
    return list(session.scalars(sa.select(PsiArtifact).order_by(PsiArtifact.id.desc()).limit(500)))
