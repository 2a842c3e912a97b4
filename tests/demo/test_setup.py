"""`datazone demo`: the synthetic zone loads through the real pipeline, and a second run reuses it."""

from __future__ import annotations

import json
import stat

from datazone.config import Settings
from datazone.db import Database
from datazone.demo.setup import demo_file, prepare_demo
from datazone.principal import service as principal_service


def test_demo_zone_loads_cleanly_and_is_reused(db: Database, settings: Settings) -> None:
    first = prepare_demo(db, settings, entities=1500)
    assert not first.reused
    assert len(first.runs) == 13
    for run in first.runs:
        assert run.status == "succeeded", (run.dataset_id, run.error)
        assert run.rows_rejected == 0 and run.rows_loaded > 0 and run.version == 1, run.dataset_id
    registration = next(r for r in first.runs if r.dataset_id == "mr_registration")
    assert registration.rows_loaded == 1500 and registration.encoding == "gb18030"
    assert next(r for r in first.runs if r.dataset_id == "sci_certification").source.endswith(".xlsx")

    info = json.loads(demo_file(settings).read_text(encoding="utf-8"))
    assert {"url", "database_url", "entities", "operator_token"} <= info.keys()
    assert info["entities"] == 1500
    assert stat.S_IMODE(demo_file(settings).stat().st_mode) == 0o600
    with db.unit_of_work() as s:
        assert principal_service.authenticate(s, token=info["operator_token"]).kind == "operator"

    second = prepare_demo(db, settings, entities=1500)
    assert second.reused and second.runs == []
    assert second.info["operator_token"] == info["operator_token"]
