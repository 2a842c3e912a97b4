from __future__ import annotations

from fastapi import APIRouter, Query

from datazone.dataset import admission, evaluation, service
from datazone.dataset.models import Dataset
from datazone.dataset.schemas import (
    AdmissionIn,
    DatasetOut,
    DatasetQualityOut,
    DatasetReviewOut,
    DatasetStateOut,
    DatasetVersionOut,
    DeprecateIn,
    redacted,
)
from datazone.deps import CuratorDep, PrincipalDep, ReviewerDep, SessionDep
from datazone.lifecycle.schemas import ReasonIn

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
# mounted by the app where the lifecycle routes were, so routes match in the same order
admission_router = APIRouter(prefix="/v1/datasets", tags=["lifecycle: datasets"])


def _out(ds: Dataset) -> DatasetOut:
    spec = service.spec_of(ds)
    return DatasetOut(
        id=ds.id,
        name=spec.name,
        name_en=spec.name_en,
        department=ds.supplier_id,
        frequency=spec.frequency,
        schedule=spec.schedule,
        format=spec.format,
        mode=spec.mode,
        current_version=ds.current_version,
        current_rows=ds.current_rows,
        admission_state=ds.admission_state,
        successor_id=ds.successor_id,
        updated_at=ds.updated_at,
        spec=redacted(spec),
    )


def _state(session: SessionDep, dataset_id: str) -> DatasetStateOut:
    ds = service.get_dataset(session, dataset_id=dataset_id)
    return DatasetStateOut(dataset_id=ds.id, admission_state=ds.admission_state, successor_id=ds.successor_id)


@router.get("", response_model=list[DatasetOut])
def list_datasets(
    session: SessionDep, _: PrincipalDep, department: str | None = Query(default=None)
) -> list[DatasetOut]:
    """Datasets in the zone with their current version and admission state, optionally of one department."""
    return [_out(ds) for ds in service.list_datasets(session, department=department)]


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: SessionDep, _: PrincipalDep) -> DatasetOut:
    """One dataset: its spec (secrets redacted), current version and row count."""
    return _out(service.get_dataset(session, dataset_id=dataset_id))


@router.get("/{dataset_id}/versions", response_model=list[DatasetVersionOut])
def list_versions(dataset_id: str, session: SessionDep, _: PrincipalDep) -> list[DatasetVersionOut]:
    """Every version of a dataset, newest first: when it was applied, by which run, with how many rows."""
    return [
        DatasetVersionOut.model_validate(v) for v in service.list_versions(session, dataset_id=dataset_id)
    ]


# --- admission, quality, retirement -------------------------------------------------------------


@admission_router.post("/{dataset_id}/review", response_model=DatasetStateOut)
def start_review(dataset_id: str, body: ReasonIn, session: SessionDep, by: CuratorDep) -> DatasetStateOut:
    """Submit a dataset for admission review (a curator)."""
    admission.start_review(session, dataset_id=dataset_id, by=by, reason=body.reason)
    return _state(session, dataset_id)


@admission_router.post("/{dataset_id}/admission", response_model=DatasetReviewOut)
def decide_admission(
    dataset_id: str, body: AdmissionIn, session: SessionDep, by: ReviewerDep
) -> DatasetReviewOut:
    """Admit or reject a dataset under review, with the reason (a reviewer)."""
    review = admission.review_dataset(
        session,
        dataset_id=dataset_id,
        decision=body.decision,
        by=by,
        reason=body.reason,
        override=body.override,
        run_id=body.run_id,
    )
    return DatasetReviewOut.model_validate(review)


@admission_router.get("/{dataset_id}/reviews", response_model=list[DatasetReviewOut])
def list_reviews(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> list[DatasetReviewOut]:
    """Every admission review of a dataset (the operator, or its department)."""
    service.require_admission_readable(session, dataset_id=dataset_id, viewer=principal)
    return [DatasetReviewOut.model_validate(r) for r in admission.list_reviews(session, dataset_id=dataset_id)]


@admission_router.post("/{dataset_id}/deprecate", response_model=DatasetStateOut)
def deprecate_dataset(
    dataset_id: str, body: DeprecateIn, session: SessionDep, by: CuratorDep
) -> DatasetStateOut:
    """Deprecate a dataset (a curator), optionally naming its successor."""
    admission.deprecate_dataset(
        session, dataset_id=dataset_id, successor_id=body.successor, by=by, reason=body.reason
    )
    return _state(session, dataset_id)


@admission_router.post("/{dataset_id}/retire", response_model=DatasetStateOut)
def retire_dataset(dataset_id: str, body: ReasonIn, session: SessionDep, by: CuratorDep) -> DatasetStateOut:
    """Retire a dataset (a curator): products stop reading it."""
    admission.retire_dataset(session, dataset_id=dataset_id, by=by, reason=body.reason)
    return _state(session, dataset_id)


@admission_router.post("/{dataset_id}/reinstate", response_model=DatasetStateOut)
def reinstate_dataset(
    dataset_id: str, body: ReasonIn, session: SessionDep, by: CuratorDep
) -> DatasetStateOut:
    """Return a deprecated dataset to service (a curator)."""
    admission.reinstate_dataset(session, dataset_id=dataset_id, by=by, reason=body.reason)
    return _state(session, dataset_id)


@admission_router.get("/{dataset_id}/quality", response_model=list[DatasetQualityOut])
def dataset_quality(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> list[DatasetQualityOut]:
    """Quality figures per version, newest first (evaluated hourly by the scheduler)."""
    service.require_admission_readable(session, dataset_id=dataset_id, viewer=principal)
    return [
        DatasetQualityOut.model_validate(q) for q in evaluation.dataset_quality(session, dataset_id=dataset_id)
    ]
