"""Joint statistics and modeling routes (docs/joint-modeling.md): an institution creates a job,
sends a statistics job its encrypted columns, follows either kind's progress, and fetches a
statistics job's encrypted sums. Every change commits before the response is sent; refusals are
audited in a transaction of their own, as for every product call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import JSONResponse

from datazone.access import pipeline
from datazone.access.api import GrantDep, IdempotencyDep, raw_body, refusals_audited
from datazone.deps import DbDep, SessionDep, SettingsDep
from datazone.errors import InvalidSpec
from datazone.joint import service
from datazone.joint.schemas import FeaturesOut, JobIn, JobOut, JobsOut, ResultOut
from datazone.limits import MAX_CHUNK_BODY
from datazone.product import service as product_service

router = APIRouter(prefix="/v1/joint", tags=["joint statistics and modeling"])

JobId = Annotated[str, Path(pattern=r"^joint_[A-Za-z0-9_-]{8,60}$", description="the joint job's id")]
COLUMN = r"^(label|segment-[0-9]{1,2})$"


@router.get("/features", response_model=FeaturesOut)
def features(
    session: SessionDep,
    grant: GrantDep,
    product: Annotated[
        str, Query(pattern=r"^[a-z][a-z0-9-]{1,62}$", description="the joint product whose features to list")
    ] = "joint-modeling",
) -> dict[str, Any]:
    """The zone features a joint product offers, with their bounds and grades."""
    spec = product_service.spec_of(product_service.get_product(session, product_id=product))
    return {"product": spec.id, "features": service.feature_catalog(spec)}


@router.post("/jobs", status_code=201, response_model=JobOut)
def create_job(
    body: JobIn, session: SessionDep, settings: SettingsDep, db: DbDep, grant: GrantDep, idempotency: IdempotencyDep
) -> JSONResponse:
    """Create a statistics or training job for a labelled sample (metered now: one unit per sample
    enterprise and the product's units per job; credited back if the zone does not deliver)."""
    request = service.JobRequest(
        kind=body.kind,
        product_id=body.product,
        purpose=body.purpose,
        features=list(body.features),
        sample=list(body.sample),
        bins=body.bins,
        edges=body.edges,
        grouped=list(body.grouped),
        segments=body.segments,
        public_key=body.public_key,
        peer_address=body.peer_address,
        institution_certificate_pem=body.institution_certificate_pem,
        own_features=body.own_features,
        epochs=body.epochs,
        batch_size=body.batch_size,
        learning_rate=body.learning_rate,
        l2=body.l2,
        sigmoid=body.sigmoid,
        scorecard=body.scorecard,
        stats_job=body.stats_job,
    )
    created = pipeline.run_audited(
        db, session, idempotency.call(grant), service.JointJobCall(settings=settings, request=request)
    )
    out = service.job_body(created.job, ticket=created.ticket)
    session.commit()
    return JSONResponse(out, status_code=created.status, headers={**created.headers, "Cache-Control": "no-store"})


@router.get("/jobs", response_model=JobsOut)
def list_jobs(session: SessionDep, grant: GrantDep) -> dict[str, Any]:
    """Your newest joint jobs."""
    jobs = service.list_jobs(session, viewer=grant.institution)
    return {"jobs": [service.job_body(j, received=service.received_columns(session, job_id=j.id)) for j in jobs]}


@router.get("/jobs/{job_id}", response_model=JobOut)
def job_status(job_id: JobId, session: SessionDep, grant: GrantDep) -> dict[str, Any]:
    """A joint job's state and progress."""
    job = service.get_job(session, institution_id=grant.institution.id, job_id=job_id)
    return service.job_body(job, received=service.received_columns(session, job_id=job.id))


@router.put("/jobs/{job_id}/columns/{name}", response_model=JobOut)
def put_column(
    job_id: JobId,
    name: Annotated[str, Path(pattern=COLUMN, description="the column: label, or segment-<k>")],
    session: SessionDep,
    db: DbDep,
    grant: GrantDep,
    body: Annotated[bytes, Depends(raw_body)],
    content_type: Annotated[str | None, Header(alias="Content-Type")] = None,
) -> dict[str, Any]:
    """One encrypted column of a statistics job (an HEU ciphertext array, one per sample row, in
    the sample's order); the job is queued once every column is in."""
    if (content_type or "").split(";")[0].strip() != "application/octet-stream":
        raise InvalidSpec("send the column as application/octet-stream (an HEU ciphertext array)", check="joint_job")
    if len(body) > MAX_CHUNK_BODY:
        raise InvalidSpec(f"a column is at most {MAX_CHUNK_BODY} bytes", check="joint_job")
    with refusals_audited(db, grant):
        job = service.put_column(session, institution_id=grant.institution.id, job_id=job_id, name=name, data=body)
    out = service.job_body(job, received=service.received_columns(session, job_id=job.id))
    session.commit()
    return out


@router.get("/jobs/{job_id}/result", response_model=ResultOut)
def result(job_id: JobId, session: SessionDep, grant: GrantDep) -> dict[str, Any]:
    """A statistics job's encrypted sums per bin and group, and the plaintext counts."""
    return service.result_body(session, institution_id=grant.institution.id, job_id=job_id)
