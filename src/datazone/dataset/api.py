from __future__ import annotations

from fastapi import APIRouter, Query

from datazone.dataset import service
from datazone.dataset.models import Dataset
from datazone.dataset.schemas import DatasetOut, DatasetVersionOut, redacted
from datazone.deps import PrincipalDep, SessionDep

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


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
