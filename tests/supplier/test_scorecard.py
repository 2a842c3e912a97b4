"""The supplier scorecard: figures that follow from its datasets, runs, product use and ratings."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from datazone.config import Settings
from datazone.dataset import admission as dataset_admission
from datazone.dataset import evaluation as dataset_evaluation
from datazone.db import Database
from datazone.product import evaluation as product_evaluation
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec
from tests.admission import BAD_BATCH, ingest, new_dataset
from tests.conftest import problem
from tests.factories import bearer, principal_key, write_csv
from tests.product.test_evaluation import answered, product_reading


def test_supplier_scorecard_follows_from_its_data(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    sid = f"sup-{secrets.token_hex(4)}"
    with db.unit_of_work() as s:
        supplier_service.apply_supplier(s, spec=SupplierSpec(id=sid, name="评分测试局"))
    ds, idle = new_dataset(db, dept=sid, reject_tolerance=0.2), new_dataset(db, dept=sid)
    ok = ingest(db, settings, ds.id, write_csv(tmp_path / "a.csv", BAD_BATCH))
    failed = ingest(db, settings, ds.id, write_csv(tmp_path / "b.csv", [r[:] for r in BAD_BATCH[-1:]] * 2))
    assert (ok.status, ok.rows_rejected, failed.status, failed.rows_rejected) == ("succeeded", 1, "failed", 2)
    with db.unit_of_work() as s:
        dataset_admission.review_dataset(
            s, dataset_id=ds.id, decision="admit", by=None, reason="r", override=True
        )
        dataset_evaluation.evaluate_datasets(s, now=datetime.now(UTC), dataset_ids=[ds.id, idle.id])
    pid = product_reading(db, ds.id)
    for n in (2, 3, 5):
        answered(db, pid, n)
    answered(db, pid, 0, outcome="refused")
    month = product_evaluation.current_period(datetime.now(UTC))
    for score in (4, 2):
        client.post(f"/v1/products/{pid}/ratings", json={"score": score, "period": month},
                    headers=bearer(principal_key(db, "institution")))  # fmt: skip
    now = datetime.now(UTC)
    window = {
        "since": (now - timedelta(hours=1)).isoformat(),
        "until": (now + timedelta(hours=1)).isoformat(),
    }
    r = client.get(f"/v1/suppliers/{sid}/scorecard", params=window, headers=keys["auditor"])
    assert r.status_code == 200, r.text
    card = r.json()
    assert (card["datasets"], card["datasets_admitted"], card["versions"]) == (2, 1, 1)
    assert card["mean_completeness"] == pytest.approx(51 / 54, abs=1e-6)
    assert card["mean_validity"] == pytest.approx(0.9) and card["on_time_share"] == 1.0
    assert (card["rows_rejected"], card["failed_runs"]) == (3, 1)
    assert card["products"] == [pid] and (card["usage_calls"], card["usage_entities"]) == (3, 10)
    assert card["mean_rating"] == 3.0
    expected = (30 * 51 / 54 + 30 * 0.9 + 25 * 1.0 + 15 * 0.5) / 100 * 100
    assert card["score"] == pytest.approx(expected, abs=0.01)
    assert card["weights"] == {"completeness": 30, "validity": 30, "timeliness": 25, "rating": 15}
    # a window before any of it: nothing measured, no score
    empty = {"since": "2020-01-01T00:00:00Z", "until": "2020-02-01T00:00:00Z"}
    card = client.get(f"/v1/suppliers/{sid}/scorecard", params=empty, headers=keys["auditor"]).json()
    assert (card["versions"], card["usage_calls"], card["mean_rating"], card["score"]) == (0, 0, None, None)
    # the department sees its own scorecard, not another's
    own = bearer(principal_key(db, "department", supplier_id=sid))
    assert client.get(f"/v1/suppliers/{sid}/scorecard", headers=own).status_code == 200
    assert problem(client.get("/v1/suppliers/test-dept/scorecard", headers=own))["status"] == 404
    assert problem(client.get("/v1/suppliers/nobody/scorecard", headers=keys["auditor"]))["status"] == 404
