"""Zones for product tests, each in a database of its own.

Products read datasets by their fixed ids (mr_registration, court_enforcement, ...), and
the session-wide test database may hold those datasets loaded by other tests (the demo
test loads them and counts versions). So each zone here lives in a fresh database on the
same server, migrated with Alembic, and is dropped when its module is done.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from datazone.config import Settings
from datazone.db import Database
from datazone.demo.generate import load_demo_specs
from datazone.ingest import service as ingest_service
from datazone.ingest.pipeline import execute_run
from datazone.product import service as product_service
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec
from tests.conftest import fresh_database  # noqa: F401  (re-exported for the product tests)

PRODUCTS_DIR = Path(__file__).resolve().parents[2] / "products"


def zone_settings(db: Database, root: Path) -> Settings:
    return Settings(home=root / "home", database_url=db.url, drop_dir=root / "drop", ingest_batch_rows=5000)


def apply_demo_specs(db: Database, *, plain_csv: bool = False) -> None:
    """The demo departments and datasets; plain_csv turns every dataset into a UTF-8 CSV
    snapshot with field names as headers, for hand-written files."""
    departments, specs = load_demo_specs()
    from datazone.dataset import service as dataset_service
    from datazone.dataset.schemas import DatasetSpec

    with db.unit_of_work() as s:
        for d in departments:
            supplier_service.apply_supplier(s, spec=SupplierSpec.model_validate(d))
        for spec in specs:
            if plain_csv:
                raw = spec.model_dump(mode="json")
                raw.update(
                    format="csv",
                    encoding="utf-8",
                    sheet=None,
                    mode="snapshot",
                    deletion_marker=None,
                    source={"kind": "directory", "path": f"{spec.id}/*.csv"},
                )
                spec = DatasetSpec.model_validate(raw)
            dataset_service.apply_dataset(s, spec=spec)


def ingest_file(db: Database, settings: Settings, dataset_id: str, path: Path | None = None) -> None:
    with db.unit_of_work() as s:
        run = ingest_service.request_run(
            s, dataset_id=dataset_id, trigger="cli", file=str(path) if path else None
        )
        run_id = run.id
    done = execute_run(db, run_id=run_id, settings=settings)
    assert done.status == "succeeded", (dataset_id, done.error)
    assert done.rows_rejected == 0, dataset_id


def write_rows(settings: Settings, dataset_id: str, fields: list[str], rows: list[dict[str, Any]]) -> Path:
    path = settings.drop_path / dataset_id / f"{dataset_id}_20261031.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in rows:
            w.writerow(["" if r.get(k) is None else str(r[k]) for k in fields])
    return path


def product_files() -> list[Path]:
    """The shipped products, but those served by anonymous query: the zone refuses one whose
    buckets would hold fewer than k (1,000) enterprises, and these zones hold a handful or no
    data yet (tests/anonymous covers them on a zone big enough)."""
    return sorted(
        p for p in PRODUCTS_DIR.glob("*.yaml") if "anonymous" not in yaml.safe_load(p.read_text(encoding="utf-8"))
    )


def load_product(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PRODUCTS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


def apply_products(db: Database) -> None:
    with db.unit_of_work() as s:
        for path in product_files():
            spec = product_service.parse_product_spec(yaml.safe_load(path.read_text(encoding="utf-8")))
            product_service.apply_product(s, spec=spec, by=None, by_name="test")
