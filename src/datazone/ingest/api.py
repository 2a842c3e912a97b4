from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from datazone.deps import CuratorDep, DbDep, PrincipalDep, SessionDep
from datazone.ingest import service
from datazone.ingest.schemas import IngestReport, IngestRunOut, RejectOut
from datazone.limits import DbId, QueryText
from datazone.openapi import content_responses

router = APIRouter(tags=["ingest"])

REPORT_PREVIEW = 100


@router.post("/v1/datasets/{dataset_id}/runs", response_model=IngestRunOut, status_code=202)
def trigger_run(dataset_id: str, session: SessionDep, operator: CuratorDep) -> IngestRunOut:
    """Run the dataset's ingest now: queued for the scheduler process, which executes it within seconds."""
    run = service.request_run(
        session, dataset_id=dataset_id, trigger="manual", requested_by=operator.name, by=operator
    )
    return IngestRunOut.model_validate(run)


@router.get("/v1/ingest/runs", response_model=list[IngestRunOut])
def list_runs(
    session: SessionDep,
    viewer: PrincipalDep,
    dataset: QueryText = None,
    status: str | None = Query(default=None, pattern="^(new|running|succeeded|failed|aborted)$"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[IngestRunOut]:
    """The operator sees every run; a department the runs of its own datasets."""
    runs = service.list_runs(session, dataset_id=dataset, status=status, limit=limit, viewer=viewer)
    return [IngestRunOut.model_validate(r) for r in runs]


@router.get("/v1/ingest/runs/{run_id}", response_model=IngestReport)
def get_report(run_id: DbId, session: SessionDep, viewer: PrincipalDep) -> IngestReport:
    """An ingest run's report: its state, counts and the first rejected rows with their line and reason."""
    run = service.get_visible_run(session, run_id=run_id, viewer=viewer)
    rejects = service.list_rejects(session, run_id=run_id, limit=REPORT_PREVIEW)
    reported = service.count_rejects(session, run_id=run_id)
    return IngestReport(
        run=IngestRunOut.model_validate(run),
        rejects=[RejectOut.model_validate(r) for r in rejects],
        rejects_reported=reported,
    )


@router.get(
    "/v1/ingest/runs/{run_id}/rejects.csv",
    response_class=StreamingResponse,
    responses=content_responses("text/csv"),
)
def download_rejects(run_id: DbId, session: SessionDep, db: DbDep, viewer: PrincipalDep) -> StreamingResponse:
    """Every rejected row of an ingest run as CSV (line number, reason, the row), streamed."""
    service.get_visible_run(session, run_id=run_id, viewer=viewer)

    def pages() -> Iterator[str]:
        # a session of its own: the request's session is closed before a streamed body is sent
        with db.unit_of_work() as s:
            yield from service.reject_report_csv(s, run_id=run_id)

    return StreamingResponse(
        pages(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="ingest-run-{run_id}-rejects.csv"'},
    )
