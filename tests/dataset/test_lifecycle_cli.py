"""`datazone lifecycle ...` in a subprocess against the test database."""

from __future__ import annotations

import json
from pathlib import Path

from datazone.config import Settings
from datazone.db import Database
from datazone.lifecycle import service as lifecycle_service
from tests.admission import BAD_BATCH, ingest, new_dataset
from tests.conftest import run_cli
from tests.factories import firm_rows, write_csv


def test_admit_dataset_evaluate_and_scorecard(db: Database, settings: Settings, tmp_path: Path) -> None:
    good, bad = new_dataset(db), new_dataset(db, reject_tolerance=0.2)
    ingest(db, settings, good.id, write_csv(tmp_path / "g.csv", firm_rows(5)))
    ingest(db, settings, bad.id, write_csv(tmp_path / "b.csv", BAD_BATCH))

    r = run_cli(settings, "lifecycle", "admit-dataset", good.id, "--reason", "checked by the data desk")
    assert r.returncode == 0, r.stderr
    assert "admitted" in r.stdout and "sample passed" in r.stdout
    r = run_cli(settings, "lifecycle", "admit-dataset", bad.id, "--reason", "x")
    assert r.returncode == 2 and "completeness.capital" in r.stderr and "validity" in r.stderr
    r = run_cli(settings, "lifecycle", "admit-dataset", bad.id, "--reason", "accepted as is", "--override")
    assert r.returncode == 0 and "override" in r.stdout, r.stderr
    with db.unit_of_work() as s:
        hist = lifecycle_service.history(s, subject_type="dataset", subject_id=bad.id)
        assert hist[-1].by_name.startswith("cli:") and hist[-1].reason == "override: accepted as is"

    r = run_cli(settings, "lifecycle", "evaluate", "--json")
    assert r.returncode == 0, r.stderr
    assert [good.id, 1] in json.loads(r.stdout)["evaluated"]
    r = run_cli(settings, "lifecycle", "scorecard", "test-dept", "--json")
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    assert card["supplier_id"] == "test-dept" and card["datasets_admitted"] >= 2
    r = run_cli(settings, "lifecycle", "scorecard", "nobody")
    assert r.returncode == 2 and "no supplier 'nobody'" in r.stderr
