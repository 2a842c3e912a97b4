"""Fixtures of the lifecycle tests: an in-process gateway on the real database, and keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.dataset.schemas import DatasetSpec
from datazone.db import Database
from datazone.ingest import service as ingest_service
from datazone.ingest.models import IngestRun
from datazone.ingest.pipeline import execute_run
from tests.conftest import unique_id
from tests.factories import apply_spec, bearer, firm_spec, principal_key


@pytest.fixture
def client(db: Database, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(db=db, settings=settings)) as c:
        yield c


@pytest.fixture(scope="module")
def keys(db: Database) -> dict[str, dict[str, str]]:
    """Bearer headers of operator staff by role, and of an outside department."""
    return {
        "curator": bearer(principal_key(db, roles=["curator"])),
        "reviewer": bearer(principal_key(db, roles=["reviewer"])),
        "auditor": bearer(principal_key(db, roles=["auditor"])),
        "operator": bearer(principal_key(db)),
    }


def ingest(db: Database, settings: Settings, dataset_id: str, file: Path) -> IngestRun:
    with db.unit_of_work() as s:
        run_id = ingest_service.request_run(s, dataset_id=dataset_id, trigger="cli", file=str(file)).id
    return execute_run(db, run_id=run_id, settings=settings)


def new_dataset(db: Database, dept: str | None = None, **overrides: object) -> DatasetSpec:
    spec = firm_spec(unique_id("lc"), department=dept or "test-dept", **overrides)
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    return spec
