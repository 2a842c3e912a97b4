"""Ratings and usage volume of products: figures that follow from the inputs."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from datazone.audit import service as audit_service
from datazone.config import Settings
from datazone.db import Database
from datazone.product import evaluation as product_evaluation
from datazone.product.models import Product
from datazone.product.schemas import ProductSpec
from tests.admission import new_dataset
from tests.conftest import problem
from tests.factories import bearer, principal_key


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
    assert r.json()["period"] == product_evaluation.current_period(datetime.now(UTC))


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
