"""Datasets in intake and their deliveries, for the admission, quality, scorecard and demand
tests: a dataset of its own per test, loaded through the real ingest pipeline."""

from __future__ import annotations

from pathlib import Path

from datazone.config import Settings
from datazone.dataset.schemas import DatasetSpec
from datazone.db import Database
from datazone.ingest import service as ingest_service
from datazone.ingest.models import IngestRun
from datazone.ingest.pipeline import execute_run
from tests.conftest import unique_id
from tests.factories import apply_spec, firm_spec, make_uscc

# 10 rows received: one with a bad USCC (rejected), three of the nine loaded lack the
# optional capital, three are deregistered. Hand counts: validity 9/10 = 0.9, capital
# 6/9, overall 51/54 cells, status active 6/9 and deregistered 3/9.
BAD_BATCH = [
    [make_uscc(1), "甲公司", "100", "2015/1/1", "存续", "5"],
    [make_uscc(2), "乙公司", "", "2015/1/2", "存续", "5"],
    [make_uscc(3), "丙公司", "", "2015/1/3", "注销", "5"],
    [make_uscc(4), "丁公司", "", "2015/1/4", "存续", "5"],
    [make_uscc(5), "戊公司", "300", "2015/1/5", "注销", "5"],
    [make_uscc(6), "己公司", "300", "2015/1/6", "存续", "5"],
    [make_uscc(7), "庚公司", "300", "2015/1/7", "存续", "5"],
    [make_uscc(8), "辛公司", "300", "2015/1/8", "在业", "5"],
    [make_uscc(9), "壬公司", "300", "2015/1/9", "注销", "5"],
    ["91110105BADBADBAD0", "癸公司", "300", "2015/1/10", "存续", "5"],
]


def ingest(db: Database, settings: Settings, dataset_id: str, file: Path) -> IngestRun:
    with db.unit_of_work() as s:
        run_id = ingest_service.request_run(s, dataset_id=dataset_id, trigger="cli", file=str(file)).id
    return execute_run(db, run_id=run_id, settings=settings)


def new_dataset(db: Database, dept: str | None = None, **overrides: object) -> DatasetSpec:
    spec = firm_spec(unique_id("lc"), department=dept or "test-dept", **overrides)
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    return spec
