"""`datazone demo`: a synthetic zone loaded through the real pipeline, then served.

Departments and dataset specs come from the package's demo specs; files are written
in the departments' own formats into the drop directory and ingested exactly like
real deliveries, never inserted directly. A second `datazone demo` on the same home
finds the zone loaded and reuses it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.demo.generate import generate_zone, load_demo_specs
from datazone.ingest import service as ingest_service
from datazone.ingest.models import IngestRun
from datazone.ingest.pipeline import execute_run
from datazone.principal import service as principal_service
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec

DEMO_OPERATOR = "demo-operator"


@dataclass
class DemoZone:
    reused: bool
    runs: list[IngestRun]
    info: dict[str, Any]


def demo_file(settings: Settings) -> Path:
    return settings.home / "demo.json"


def read_demo_file(settings: Settings) -> dict[str, Any]:
    path = demo_file(settings)
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_demo_file(settings: Settings, info: dict[str, Any]) -> None:
    path = demo_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # it holds credentials: readable by the owner only
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False, indent=2)
    tmp.replace(path)


def prepare_demo(
    db: Database, settings: Settings, *, entities: int, say: Callable[[str], None] = lambda _m: None
) -> DemoZone:
    departments, specs = load_demo_specs()
    previous = read_demo_file(settings)
    with db.unit_of_work() as s:
        for d in departments:
            supplier_service.apply_supplier(s, spec=SupplierSpec.model_validate(d))
        for spec in specs:
            dataset_service.apply_dataset(s, spec=spec)
        loaded = all(
            dataset_service.get_dataset(s, dataset_id=spec.id).current_version is not None for spec in specs
        )
    reused = loaded and previous.get("entities") == entities
    runs: list[IngestRun] = []
    if not reused:
        say(f"generating a synthetic zone of {entities:,} enterprises in {settings.drop_path}")
        files = generate_zone(settings.drop_path, entities=entities)
        for f in files:
            with db.unit_of_work() as s:
                run = ingest_service.request_run(
                    s, dataset_id=f.dataset_id, trigger="cli", requested_by="demo", file=None
                )
                run_id = run.id
            say(f"ingesting {f.dataset_id} ({f.rows:,} rows, {f.path.name})")
            done = execute_run(db, run_id=run_id, settings=settings)
            runs.append(done)
            if done.status != "succeeded":
                raise RuntimeError(f"demo dataset {f.dataset_id} failed to load: {done.error}")
    token = previous.get("operator_token")
    with db.unit_of_work() as s:
        operator = principal_service.find_principal(s, name=DEMO_OPERATOR)
        if token:
            try:
                principal_service.authenticate(s, token=token)
            except Exception:
                token = None
        if operator is None:
            operator = principal_service.create_principal(
                s, kind="operator", name=DEMO_OPERATOR, roles=["curator", "reviewer", "auditor"]
            )
        if not token:
            token = principal_service.issue_key(s, principal=operator).token
    info = dict(previous)
    info.update(
        {
            "url": f"http://{settings.host}:{settings.port}",
            "database_url": db.url,
            "entities": entities,
            "operator_token": token,
        }
    )
    write_demo_file(settings, info)
    return DemoZone(reused=reused, runs=runs, info=info)
