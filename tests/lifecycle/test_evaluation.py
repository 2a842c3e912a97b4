"""Ratings, usage volume and the supplier scorecard: figures that follow from the inputs."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from datazone.audit import service as audit_service
from datazone.config import Settings
from datazone.db import Database
from datazone.lifecycle import service as lifecycle_service
from datazone.product.models import Product
from datazone.product.schemas import ProductSpec
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec
from tests.conftest import problem
from tests.factories import bearer, principal_key, write_csv
from tests.lifecycle.conftest import ingest, new_dataset
from tests.lifecycle.test_use_gate import BAD_BATCH


def product_reading(db: Database, dataset_id: str) -> str:
    """A published product reading only this test dataset.

    Stored as a row: every engine logic reads the demo zone's datasets, so the product
    service would (rightly) refuse a spec over a test dataset."""
    pid = f"p-{secrets.token_hex(4)}"
    spec = ProductSpec.model_validate(
        {
            "id": pid,
            "name": "测试产品",
            "category": "custom",
            "tier": "paid",
            "price_fen": 100,
            "purposes": ["pre_loan"],
            "consent_required": False,
            "logic": "credit_basic",
            "sources": {dataset_id: ["name"]},
            "outputs": [{"name": "name", "from": [f"{dataset_id}.name"]}],
        }
    )
    with db.unit_of_work() as s:
        s.add(
            Product(
                id=pid,
                spec=spec.model_dump(mode="json", by_alias=True),
                spec_sha256="0" * 64,
                state="published",
                seamless_switch=False,
            )
        )
    return pid


def answered(db: Database, product_id: str, entities: int, outcome: str = "ok") -> None:
    """One data access of the product, recorded the way the gateway records it."""
    with db.unit_of_work() as s:
        audit_service.record(
            s,
            actor=None,
            actor_name="gateway",
            action=audit_service.DATA_ACCESS,
            object_type="product",
            object_id=product_id,
            outcome=outcome,
            entity_count=entities,
        )


def test_ratings_one_per_institution_and_month(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    pid = product_reading(db, new_dataset(db).id)
    bank, other = bearer(principal_key(db, "institution")), bearer(principal_key(db, "institution"))
    url = f"/v1/products/{pid}/ratings"
    r = client.post(url, json={"score": 2, "comment": "slow", "period": "2026-10"}, headers=bank)
    assert r.status_code == 200 and r.json()["score"] == 2 and r.json()["period"] == "2026-10"
    # rating again in the same month replaces the rating
    r = client.post(url, json={"score": 4, "comment": "faster now", "period": "2026-10"}, headers=bank)
    assert r.json()["score"] == 4 and r.json()["comment"] == "faster now"
    client.post(url, json={"score": 5, "period": "2026-11"}, headers=bank)
    client.post(url, json={"score": 3, "period": "2026-11"}, headers=other)
    summary = client.get(url, headers=keys["auditor"]).json()
    assert summary["count"] == 3 and summary["mean"] == 4.0
    assert summary["by_score"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 1}
    assert summary["by_period"] == {"2026-10": 4.0, "2026-11": 4.0}
    # no period: this month in Shanghai
    r = client.post(url, json={"score": 1}, headers=other)
    assert r.json()["period"] == lifecycle_service.current_period(datetime.now(UTC))


def test_bad_ratings_are_refused_and_write_nothing(
    db: Database, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    pid = product_reading(db, new_dataset(db).id)
    bank = bearer(principal_key(db, "institution"))
    url = f"/v1/products/{pid}/ratings"
    for score in (0, 6):
        r = client.post(url, json={"score": score}, headers=bank)
        assert r.status_code == 422 and problem(r)["errors"][0]["location"] == "body.score"
    r = client.post(url, json={"score": 3, "period": "2026-13"}, headers=bank)
    assert r.status_code == 422 and problem(r)["errors"][0]["location"] == "body.period"
    dept = bearer(principal_key(db, "department", supplier_id="test-dept"))
    assert problem(client.post(url, json={"score": 3}, headers=dept))["status"] == 403
    assert problem(client.post(url, json={"score": 3}, headers=keys["operator"]))["status"] == 403
    r = client.post("/v1/products/no-such-product/ratings", json={"score": 3}, headers=bank)
    assert problem(r)["status"] == 404
    assert client.get(url, headers=bank).json()["count"] == 0


def test_usage_volume_per_product_and_day(
    db: Database, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    pid = product_reading(db, new_dataset(db).id)
    for n in (2, 3):
        answered(db, pid, n)
    answered(db, pid, 0, outcome="refused")
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = client.get("/v1/usage/volume", params={"product": pid, "since": since}, headers=keys["auditor"])
    assert r.status_code == 200, r.text
    [day] = r.json()
    assert (day["product_id"], day["calls"], day["entities"], day["refused"]) == (pid, 2, 5, 1)
    bank = bearer(principal_key(db, "institution"))
    assert problem(client.get("/v1/usage/volume", headers=bank))["status"] == 403
    r = client.get("/v1/usage/volume", params={"since": since, "until": since}, headers=keys["auditor"])
    assert problem(r)["status"] == 422 and "after" in r.json()["detail"]


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
        lifecycle_service.review_dataset(
            s, dataset_id=ds.id, decision="admit", by=None, reason="r", override=True
        )
        lifecycle_service.evaluate_datasets(s, now=datetime.now(UTC), dataset_ids=[ds.id, idle.id])
    pid = product_reading(db, ds.id)
    for n in (2, 3, 5):
        answered(db, pid, n)
    answered(db, pid, 0, outcome="refused")
    month = lifecycle_service.current_period(datetime.now(UTC))
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
